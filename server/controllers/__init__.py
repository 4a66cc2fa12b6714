"""Thin Litestar controllers, one per resource: parse, call a service, wrap the result."""

from server.controllers.admin import AdminController
from server.controllers.anthropic import MessagesController
from server.controllers.chat import ChatController
from server.controllers.completions import CompletionsController
from server.controllers.embeddings import EmbeddingsController
from server.controllers.health import HealthController
from server.controllers.models import ModelsController
from server.controllers.ollama import OllamaController
from server.controllers.responses import ResponsesController
from server.controllers.router import RouterController
from server.controllers.tokens import TokensController

ROUTES = [ModelsController, ChatController, CompletionsController, EmbeddingsController, TokensController,
          HealthController, AdminController, MessagesController, ResponsesController, RouterController,
          OllamaController]
