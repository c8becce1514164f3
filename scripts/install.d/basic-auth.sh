# basic-auth's integration tests generate password hashes with the standard tools users use:
# Apache's `htpasswd` (bcrypt, SHA-256/512-crypt, {SHA}) and `openssl passwd` (SHA-crypt).
ensure_apt apache2-utils openssl
