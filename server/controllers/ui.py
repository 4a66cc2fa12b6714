"""The page for people (server/ui/): a chat with any alias and the pool, served from the package's own
files (nothing fetched at run time, works offline). Public like /docs: the page asks for the API key
itself when the server has keys, and sends it with every call it makes."""

from __future__ import annotations

from pathlib import Path

from litestar import Router, get
from litestar.response import Redirect
from litestar.static_files import create_static_files_router

from server.http.auth import PUBLIC

UI_DIR = Path(__file__).resolve().parent.parent / "ui"


@get("/", include_in_schema=False, opt=PUBLIC, sync_to_thread=False)
def root() -> Redirect:
    """A person opening the server's address gets the page."""
    return Redirect(path="/ui/")


def ui_files() -> Router:
    return create_static_files_router(path="/ui", directories=[UI_DIR], html_mode=True, include_in_schema=False,
                                      opt=PUBLIC)
