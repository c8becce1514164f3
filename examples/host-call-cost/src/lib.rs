//! Benchmark instrument: makes `count` host calls of one `kind` per request (configuration
//! `"<kind>:<count>"`, e.g. `"header:20"`), in the request-headers callback, and nothing else.
//! Envoy's CPU per request over the do-nothing floor (`examples/noop`), divided by `count`, is
//! what one call of that kind costs in Envoy (BENCHMARKS.md, "What one host call costs").
//! A configuration it does not understand is refused, so a typo never measures nothing.

/// The kinds of host call measured, by the name the configuration uses. Each is a call the
/// policies make per request (BENCHMARKS.md, "Host calls per request").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// One request header's value, present (`proxy_get_header_map_value` on `:path`): returns
    /// data, so Envoy first calls the module's allocator (a second entry into the VM).
    Header,
    /// A request header the request does not have: the same call, nothing returned, so no
    /// allocation: against `Header`, it shows what returning data costs.
    HeaderAbsent,
    /// The whole request header map (`proxy_get_header_map_pairs`): returns data.
    Headers,
    /// `source.address` (`proxy_get_property`): returns data.
    Property,
    /// Sets a request header (`proxy_replace_header_map_value`): writes only.
    SetHeader,
    /// Removes a request header the request does not have (`proxy_remove_header_map_value`).
    RemoveHeader,
    /// Writes a filter-state property (`proxy_set_property`), as the identity hand-off does.
    SetProperty,
    /// Reads a present shared-data entry (`proxy_get_shared_data`): returns data.
    SharedGet,
    /// Writes a shared-data entry (`proxy_set_shared_data`), no compare-and-swap.
    SharedSet,
    /// Reads the clock (`proxy_get_current_time_nanoseconds`): returns a scalar.
    Now,
    /// Increments a counter (`proxy_increment_metric`).
    Counter,
}

impl Kind {
    const ALL: [(&'static str, Kind); 11] = [
        ("header", Kind::Header),
        ("header_absent", Kind::HeaderAbsent),
        ("headers", Kind::Headers),
        ("property", Kind::Property),
        ("set_header", Kind::SetHeader),
        ("remove_header", Kind::RemoveHeader),
        ("set_property", Kind::SetProperty),
        ("shared_get", Kind::SharedGet),
        ("shared_set", Kind::SharedSet),
        ("now", Kind::Now),
        ("counter", Kind::Counter),
    ];
}

/// Parses `"<kind>:<count>"`; the count is 1 to 1,000.
pub fn parse(config: &[u8]) -> Result<(Kind, u32), String> {
    let text = std::str::from_utf8(config).map_err(|_| "configuration is not UTF-8")?;
    let (name, count) = text
        .trim()
        .split_once(':')
        .ok_or("configuration must be \"<kind>:<count>\"")?;
    let kind = Kind::ALL
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, k)| *k)
        .ok_or_else(|| format!("unknown kind `{name}`"))?;
    let count: u32 = count
        .parse()
        .ok()
        .filter(|c| (1..=1000).contains(c))
        .ok_or("count must be 1 to 1000")?;
    Ok((kind, count))
}

#[cfg(target_arch = "wasm32")]
mod filter {
    use super::Kind;
    use proxy_wasm::hostcalls;
    use proxy_wasm::traits::{Context, HttpContext, RootContext};
    use proxy_wasm::types::{Action, ContextType, LogLevel, MetricType};
    use std::hint::black_box;

    const SHARED_KEY: &str = "host-call-cost.entry";

    struct Root {
        kind: Kind,
        count: u32,
        counter: u32,
    }

    impl Context for Root {}
    impl RootContext for Root {
        fn on_configure(&mut self, _: usize) -> bool {
            let config = self.get_plugin_configuration().unwrap_or_default();
            match super::parse(&config) {
                Ok((kind, count)) => {
                    self.kind = kind;
                    self.count = count;
                }
                Err(e) => {
                    let _ = hostcalls::log(LogLevel::Critical, &format!("host-call-cost: {e}"));
                    return false;
                }
            }
            if let Ok(id) = hostcalls::define_metric(MetricType::Counter, "host_call_cost.calls") {
                self.counter = id;
            }
            // The entry `shared_get` reads: as long as a rate-limiting slot.
            self.set_shared_data(SHARED_KEY, Some(&[7u8; 48]), None)
                .is_ok()
        }

        fn get_type(&self) -> Option<ContextType> {
            Some(ContextType::HttpContext)
        }

        fn create_http_context(&self, _: u32) -> Option<Box<dyn HttpContext>> {
            Some(Box::new(Calls {
                kind: self.kind,
                count: self.count,
                counter: self.counter,
            }))
        }
    }

    struct Calls {
        kind: Kind,
        count: u32,
        counter: u32,
    }

    impl Context for Calls {}
    impl HttpContext for Calls {
        fn on_http_request_headers(&mut self, _: usize, _: bool) -> Action {
            for _ in 0..self.count {
                match self.kind {
                    Kind::Header => {
                        black_box(self.get_http_request_header(":path"));
                    }
                    Kind::HeaderAbsent => {
                        black_box(self.get_http_request_header("x-absent"));
                    }
                    Kind::Headers => {
                        black_box(self.get_http_request_headers());
                    }
                    Kind::Property => {
                        black_box(self.get_property(vec!["source", "address"]));
                    }
                    Kind::SetHeader => self.set_http_request_header("x-bench", Some("1")),
                    Kind::RemoveHeader => self.set_http_request_header("x-absent", None),
                    Kind::SetProperty => {
                        self.set_property(vec!["host_call_cost"], Some(b"client-00042"))
                    }
                    Kind::SharedGet => {
                        black_box(self.get_shared_data(SHARED_KEY));
                    }
                    Kind::SharedSet => {
                        let _ = self.set_shared_data(SHARED_KEY, Some(&[7u8; 48]), None);
                    }
                    Kind::Now => {
                        black_box(self.get_current_time());
                    }
                    Kind::Counter => {
                        let _ = hostcalls::increment_metric(self.counter, 1);
                    }
                }
            }
            Action::Continue
        }
    }

    proxy_wasm::main! {{
        proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> {
            Box::new(Root { kind: Kind::Now, count: 0, counter: 0 })
        });
    }}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_kind_and_refuses_the_rest() {
        for (name, kind) in Kind::ALL {
            assert_eq!(parse(format!("{name}:20").as_bytes()), Ok((kind, 20)));
        }
        for bad in [
            "",
            "header",
            "header:0",
            "header:1001",
            "headr:5",
            "header:x",
        ] {
            assert!(parse(bad.as_bytes()).is_err(), "{bad}");
        }
    }
}
