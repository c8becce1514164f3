# xml-threat-protection's integration tests send HTTP/2 requests whose body is followed by
# trailers, which curl cannot do: nghttp (`--trailer`) can.
ensure_apt nghttp2-client
