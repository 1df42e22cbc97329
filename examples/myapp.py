# myapp.py
from pydantic import BaseModel
from engine import Engine, Queue, Retry, TaskContext

app = Engine()          # DSN: argument > $SKIPLOCK_DATABASE_URL > embedded PostgreSQL

class ResizeIn(BaseModel):
    url: str

class ResizeOut(BaseModel):
    thumb: str

@app.task("resize-image", queue=Queue("images"), retry=Retry(max_attempts=3), max_duration=300)
async def resize(payload: ResizeIn, ctx: TaskContext) -> ResizeOut:
    return ResizeOut(thumb=payload.url + "?w=100")

@app.task("plain")                      # def tasks run in a thread
def plain(payload: dict, ctx: TaskContext) -> dict:
    return {"seen": payload, "attempt": ctx.attempt}
