"""Janus' conversation format as a Jinja chat template.

It renders the layout DeepSeek's Janus-Pro uses (and transformers' conversion writes):
``<|User|>: {text}\\n\\n<|Assistant|>: {reply}<｜end▁of▁sentence｜>``, with each image of a turn
as ``<image_placeholder>`` on its own line. A message's content is a string or a list of
``{"type": "text"|"image", ...}`` parts.
"""

JANUS_CHAT_TEMPLATE = (
    "{%- set eos = '<｜end▁of▁sentence｜>' -%}"
    "{%- for message in messages -%}"
    "{%- set role = message['role'] | lower -%}"
    "{%- if role == 'user' -%}{{ '<|User|>: ' }}"
    "{%- elif role == 'assistant' -%}{{ '<|Assistant|>: ' }}"
    "{%- else -%}{{ message['role'] | capitalize ~ ': ' }}"
    "{%- endif -%}"
    "{%- if message['content'] is string -%}{{ message['content'] | trim }}"
    "{%- else -%}"
    "{%- for part in message['content'] -%}"
    "{%- if part['type'] == 'image' -%}"
    "{{ ('\\n' if not loop.first else '') ~ '<image_placeholder>' ~ ('\\n' if not loop.last else '') }}"
    "{%- elif part['type'] == 'text' -%}"
    "{%- set follows_text = not loop.first and message['content'][loop.index0 - 1]['type'] == 'text' -%}"
    "{{ (' ' if follows_text else '') ~ (part['text'] | trim) }}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- endif -%}"
    "{%- if role == 'user' -%}{{ '\\n\\n' }}{%- elif role == 'assistant' -%}{{ eos }}{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<|Assistant|>:' }}{%- endif -%}"
)
