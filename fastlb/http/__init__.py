"""HTTP/1.1 message handling for the proxy, all sans-IO: bytes in, decisions out.

- `head`: a parsed request head and the framing rules every parser shares.
- `parsers`: the httptools and h11 head parsers behind one small interface.
- `framing`: where a body ends (Content-Length, chunked), found without copying it.
- `response`: the backend's response head.
- `rewrite`: the few edits a proxy makes to a head (hop-by-hop headers, X-Forwarded-*).
- `messages`: the responses fastlb itself writes (errors in the spec's shape).
"""
