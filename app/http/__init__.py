"""HTTP protocol details shared by the routers: tus headers and status codes, Range requests."""
