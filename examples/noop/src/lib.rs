//! The benchmarks' floor: a proxy-wasm HTTP filter whose callbacks are the SDK's defaults
//! (every request and response continues untouched). Envoy still creates the VMs, a context
//! per request and calls into the module at every phase, which is the fixed cost any wasm
//! policy pays; `make bench` measures each policy against it (BENCHMARKS.md).

#[cfg(target_arch = "wasm32")]
mod filter {
    use proxy_wasm::traits::{Context, HttpContext, RootContext};
    use proxy_wasm::types::ContextType;

    struct Root;
    struct Noop;

    impl Context for Root {}
    impl RootContext for Root {
        fn get_type(&self) -> Option<ContextType> {
            Some(ContextType::HttpContext)
        }

        fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
            Some(Box::new(Noop))
        }
    }

    impl Context for Noop {}
    impl HttpContext for Noop {}

    proxy_wasm::main! {{
        proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(Root) });
    }}
}
