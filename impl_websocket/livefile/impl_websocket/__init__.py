"""The livefile server: FastAPI application, WebSocket endpoints, HTTP routes, livefile serve."""
