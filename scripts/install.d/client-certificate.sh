# client-certificate's integration tests and benchmark generate a test PKI (CA, server and client
# certificates) with the `openssl` CLI, and send HTTPS requests with client certificates with curl.
ensure_apt openssl curl
