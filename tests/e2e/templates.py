"""Chat templates written for the native-format tests, each in the style of a model family (hand-written,
short): they render `tools` and tool history their own way, as the real families' templates do."""

from __future__ import annotations

import json

# ChatML with Hermes/Qwen-style tools: a <tools> list in the system turn, calls in <tool_call> tags,
# results in <tool_response> tags inside a user turn.
HERMES = (
    "{%- if tools -%}{{ '<|im_start|>system\\n' }}"
    "{%- if messages[0].role == 'system' %}{{ messages[0].content + '\\n\\n' }}{% endif -%}"
    "{{ '# Tools\\nYou may call these functions:\\n<tools>\\n' }}"
    "{%- for t in tools %}{{ t | tojson }}{{ '\\n' }}{% endfor -%}"
    "{{ '</tools>\\nTo call one, write <tool_call>{\"name\": ..., \"arguments\": {...}}</tool_call><|im_end|>\\n' }}"
    "{%- elif messages[0].role == 'system' %}{{ '<|im_start|>system\\n' + messages[0].content + '<|im_end|>\\n' }}"
    "{%- endif -%}"
    "{%- for m in messages if m.role != 'system' -%}"
    "{%- if m.role == 'tool' -%}"
    "{{ '<|im_start|>user\\n<tool_response>\\n' + m.content + '\\n</tool_response><|im_end|>\\n' }}"
    "{%- elif m.tool_calls -%}{{ '<|im_start|>assistant\\n' }}"
    "{%- for c in m.tool_calls %}{{ '<tool_call>\\n' }}"
    "{{ {'name': c.function.name, 'arguments': c.function.arguments} | tojson }}{{ '\\n</tool_call>' }}{% endfor -%}"
    "{{ '<|im_end|>\\n' }}"
    "{%- else -%}{{ '<|im_start|>' + m.role + '\\n' + m.content + '<|im_end|>\\n' }}"
    "{%- endif -%}{%- endfor -%}"
    "{%- if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif -%}"
)

# Llama 3.x style: header tokens, tools as JSON in the system turn, calls as bare JSON with `parameters`,
# results in an `ipython` turn.
LLAMA3 = (
    "{%- macro turn(role, text) %}{{ '<|start_header_id|>' + role + '<|end_header_id|>\\n\\n' + text + '<|eot_id|>' }}"
    "{% endmacro -%}"
    "{%- set system = messages[0].content if messages[0].role == 'system' else '' -%}"
    "{%- if tools -%}{%- set ns = namespace(text=system + '\\n\\nEnvironment: ipython\\nAnswer with a function "
    "call as JSON: {\"name\": function name, \"parameters\": object of its arguments}.\\n') -%}"
    "{%- for t in tools %}{% set ns.text = ns.text + (t | tojson) + '\\n' %}{% endfor -%}"
    "{{ turn('system', ns.text) }}{%- elif system %}{{ turn('system', system) }}{%- endif -%}"
    "{%- for m in messages if m.role != 'system' -%}"
    "{%- if m.role == 'tool' %}{{ turn('ipython', m.content) }}"
    "{%- elif m.tool_calls %}{{ turn('assistant', {'name': m.tool_calls[0].function.name, "
    "'parameters': m.tool_calls[0].function.arguments} | tojson) }}"
    "{%- else %}{{ turn(m.role, m.content) }}{%- endif -%}{%- endfor -%}"
    "{%- if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{% endif -%}"
)

# Mistral v3 style: [AVAILABLE_TOOLS] before the last user turn, calls as a [TOOL_CALLS] JSON list,
# results in [TOOL_RESULTS].
MISTRAL = (
    "{%- set ns = namespace(last=0) -%}"
    "{%- for m in messages %}{% if m.role == 'user' %}{% set ns.last = loop.index0 %}{% endif %}{% endfor -%}"
    "{%- for m in messages -%}"
    "{%- if m.role == 'user' or m.role == 'system' -%}"
    "{%- if tools and loop.index0 == ns.last -%}"
    "{{ '[AVAILABLE_TOOLS]' + (tools | tojson) + '[/AVAILABLE_TOOLS]' }}{% endif -%}"
    "{{ '[INST]' + m.content + '[/INST]' }}"
    "{%- elif m.role == 'tool' -%}"
    "{{ '[TOOL_RESULTS]' + ({'call_id': m.tool_call_id, 'content': m.content} | tojson) + '[/TOOL_RESULTS]' }}"
    "{%- elif m.tool_calls -%}{{ '[TOOL_CALLS][' }}"
    "{%- for c in m.tool_calls %}{% if c.id | length != 9 %}{{ raise_exception('ids have 9 characters') }}{% endif -%}"
    "{{ {'name': c.function.name, 'arguments': c.function.arguments, 'id': c.id} | tojson }}"
    "{%- if not loop.last %}{{ ', ' }}{% endif %}{% endfor %}{{ ']' + eos_token }}"
    "{%- else %}{{ m.content + eos_token }}{%- endif -%}{%- endfor -%}"
)

# A thinking model (Qwen3 style): the generation prompt opens <think>, unless enable_thinking is false.
THINKING = (
    "{%- for m in messages %}{{ '<|im_start|>' + m.role + '\\n' + m.content + '<|im_end|>\\n' }}{% endfor -%}"
    "{%- if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}"
    "{%- if enable_thinking is defined and not enable_thinking %}{{ '<think>\\n\\n</think>\\n\\n' }}"
    "{%- else %}{{ '<think>\\n' }}{% endif %}{% endif -%}"
)


def registry(**templates: str) -> str:
    """A models.yaml with one alias per template (JSON strings are YAML strings), and `plain`: the GGUF's own
    template, which knows nothing of tools or thinking."""
    lines = ["pool:", f"  max_resident: {len(templates) + 1}", "models:",
             "  plain:", "    path: {model}", "    sampling:", "      temperature: 0.0"]  # the GGUF's template
    for alias, template in templates.items():
        lines += [f"  {alias}:", "    path: {model}", "    n_ctx: 2048", f"    chat_template: {json.dumps(template)}",
                  "    sampling:", "      temperature: 0.0"]
    return "\n".join(lines) + "\n"
