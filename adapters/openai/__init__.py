"""The drop-in clients: MemoryClient / AsyncMemoryClient (client), the request steps they share with the proxy
(steps), and the Responses API (responses)."""
