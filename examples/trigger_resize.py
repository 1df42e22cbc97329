from myapp import app, resize, ResizeIn

h = resize.trigger(ResizeIn(url="https://example.com/cat.png"), tags=["user:42"])
run = app.runs.poll(h, timeout=60, task=resize)   # waits for a final status; typed output
print(run.status, run.output)                     # COMPLETED thumb='https://example.com/cat.png?w=100'
