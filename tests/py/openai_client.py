"""The official OpenAI Python client against `phiq serve` (tests/serve.rs starts the
server): chat and completions, streaming and not, stop, seed, usage, errors.
Usage: openai_client.py BASE_URL API_KEY. Prints "ok" on success; any failure raises."""
import sys

import openai
from openai import OpenAI

base, key = sys.argv[1], sys.argv[2]
client = OpenAI(base_url=base, api_key=key, max_retries=0, timeout=120)

models = client.models.list()
model = models.data[0].id

messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Name a color."}]
chat = client.chat.completions.create(model=model, messages=messages, max_tokens=8, temperature=0)
assert chat.object == "chat.completion", chat
choice = chat.choices[0]
assert choice.message.role == "assistant"
assert choice.finish_reason in ("stop", "length"), choice
assert chat.usage.completion_tokens <= 8 and chat.usage.total_tokens == chat.usage.prompt_tokens + chat.usage.completion_tokens

# The same request streamed: the same text, the role first, usage at the end.
chunks = list(client.chat.completions.create(model=model, messages=messages, max_tokens=8, temperature=0,
                                             stream=True, stream_options={"include_usage": True}))
assert chunks[0].choices[0].delta.role == "assistant"
text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
assert text == (choice.message.content or ""), (text, choice.message.content)
assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == chat.usage.completion_tokens
finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
assert finishes == [choice.finish_reason], finishes

# Completions; a stop string cuts the text where it starts.
full = client.completions.create(model=model, prompt="Once upon a time", max_tokens=16, temperature=0)
t = full.choices[0].text
assert full.choices[0].finish_reason == "length" and len(t) > 8, full
cut = client.completions.create(model=model, prompt="Once upon a time", max_tokens=16, temperature=0, stop=[t[4:8]])
assert cut.choices[0].text == t[:4] and cut.choices[0].finish_reason == "stop", (cut, t)
streamed = "".join(c.choices[0].text for c in client.completions.create(
    model=model, prompt="Once upon a time", max_tokens=16, temperature=0, stream=True) if c.choices)
assert streamed == t, (streamed, t)

# A seed reproduces a sampled answer.
a = client.completions.create(model=model, prompt="Hello", max_tokens=12, temperature=1.0, seed=1234)
b = client.completions.create(model=model, prompt="Hello", max_tokens=12, temperature=1.0, seed=1234)
assert a.choices[0].text == b.choices[0].text

# Errors arrive as the client's exceptions, with the server's message.
try:
    client.completions.create(model=model, prompt="x", n=2)
    raise AssertionError("n=2 was accepted")
except openai.BadRequestError as e:
    assert "`n`" in str(e), e
try:
    OpenAI(base_url=base, api_key="wrong", max_retries=0).models.list()
    raise AssertionError("a wrong key was accepted")
except openai.AuthenticationError:
    pass
print("ok")
