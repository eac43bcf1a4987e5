"""The baseline: a minimal FastAPI/uvicorn WebSocket endpoint that only appends binary messages
to a file, run with the same uvicorn options as livefile (no compression, uvloop, httptools).

Run: python -m bench.baseline_ws PORT FILE
"""

from __future__ import annotations

import sys

import uvicorn
from fastapi import FastAPI, WebSocket

app = FastAPI()
TARGET = sys.argv[2] if len(sys.argv) > 2 else "/dev/null"


@app.websocket("/append")
async def append(websocket: WebSocket) -> None:
    await websocket.accept()
    with open(TARGET, "wb", buffering=0) as target:
        while True:
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                return
            if message.get("bytes") is not None:
                target.write(message["bytes"])
            else:  # any text message ends the upload
                await websocket.send_text("done")
                await websocket.close()
                return


if __name__ == "__main__":
    uvicorn.run(
        app,
        host="127.0.0.1",
        port=int(sys.argv[1]),
        ws="websockets-sansio",
        ws_per_message_deflate=False,
        ws_max_size=2 * 1024 * 1024,
        loop="uvloop",
        http="httptools",
        log_level="warning",
    )
