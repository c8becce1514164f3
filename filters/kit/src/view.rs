//! One callback's view of the host: the request's header maps read once, the clock read once,
//! each property read once.
//!
//! Every host call crosses between Envoy and the VM (about 1 µs), and policies ask for the same
//! things again: three headers one by one, the clock twice, the client address in two policies
//! of a bundle. [`Vm`](crate::runtime::Vm) hands each callback (a bundle: every member run in
//! that callback) a [`HostView`] over the real host instead: the first read of a header map
//! copies the whole map in one call (`proxy_get_header_map_pairs`) and every later read of that
//! map is answered from the copy; writes go to Envoy at once and update the copy as Envoy
//! updates its map. The view lives for one callback only: between callbacks Envoy's other
//! filters run and may change anything.

use crate::host::{
    BodyBuffer, Direction, GrpcCall, HeaderMap, Host, HostError, LogLevel, SharedValue,
};
use std::cell::Cell;

/// The maps a view keeps a copy of: a request's own, stable within a callback. A call's
/// response headers are read through (a policy reads one or two of them, once).
fn slot_of(map: HeaderMap) -> Option<usize> {
    match map {
        HeaderMap::Request => Some(0),
        HeaderMap::RequestTrailers => Some(1),
        HeaderMap::Response => Some(2),
        HeaderMap::ResponseTrailers => Some(3),
        HeaderMap::CallResponse => None,
    }
}

/// One header line of a [`Pairs`] copy: where its name and value sit in the copy's bytes.
#[derive(Debug, Clone, Copy)]
struct Line {
    name: (usize, usize),
    value: (usize, usize),
}

/// A header map as Envoy handed it (the proxy-wasm wire bytes, see `wire::serialize_pairs`),
/// with the names and values written since appended to the same bytes. Values are looked up in
/// place: nothing is allocated per header.
#[derive(Debug, Default)]
struct Pairs {
    bytes: Vec<u8>,
    lines: Vec<Line>,
}

impl Pairs {
    /// Indexes the wire format exactly as `wire::deserialize_pairs` reads it: an incomplete size
    /// table gives no headers, a cut-off name or value ends the list.
    fn parse(bytes: Vec<u8>) -> Pairs {
        let word = |at: usize| -> Option<usize> {
            let end = at.checked_add(4)?;
            Some(u32::from_le_bytes(bytes.get(at..end)?.try_into().ok()?) as usize)
        };
        let table_end = word(0).and_then(|count| {
            let end = count.checked_mul(8)?.checked_add(4)?;
            (end <= bytes.len()).then_some((count, end))
        });
        let Some((count, mut at)) = table_end else {
            return Pairs::default();
        };
        let mut lines = Vec::with_capacity(count);
        for i in 0..count {
            let (Some(n), Some(v)) = (word(4 + 8 * i), word(8 + 8 * i)) else {
                break;
            };
            let value_start = at.saturating_add(n).saturating_add(1);
            let end = value_start.saturating_add(v);
            if end > bytes.len() {
                break;
            }
            lines.push(Line {
                name: (at, n),
                value: (value_start, v),
            });
            at = end.saturating_add(1);
        }
        Pairs { bytes, lines }
    }

    fn part(&self, at: (usize, usize)) -> &[u8] {
        part(&self.bytes, at)
    }

    fn is(&self, line: &Line, name: &str) -> bool {
        named(&self.bytes, line, name)
    }

    /// A line as text, or `None` when its name or value is not UTF-8 (`headers()` skips such a
    /// line, as `wire::deserialize_pairs` does).
    fn text(&self, line: &Line) -> Option<(&str, &str)> {
        let name = std::str::from_utf8(self.part(line.name)).ok()?;
        let value = std::str::from_utf8(self.part(line.value)).ok()?;
        Some((name, value))
    }

    /// Envoy's `get_header_map_value`: the first line of that name; `None` when its value is not
    /// UTF-8, as `WasmHost::header` answers.
    fn first(&self, name: &str) -> Option<String> {
        let line = self.lines.iter().find(|l| self.is(l, name))?;
        std::str::from_utf8(self.part(line.value))
            .ok()
            .map(str::to_owned)
    }

    fn contains(&self, name: &str) -> bool {
        self.lines.iter().any(|l| self.is(l, name))
    }

    fn all(&self) -> Vec<(String, String)> {
        self.lines
            .iter()
            .filter_map(|l| self.text(l))
            .map(|(n, v)| (n.to_owned(), v.to_owned()))
            .collect()
    }

    fn values(&self, name: &str) -> Vec<String> {
        self.lines
            .iter()
            .filter(|l| self.is(l, name))
            .filter_map(|l| self.text(l))
            .map(|(_, v)| v.to_owned())
            .collect()
    }

    fn remove(&mut self, name: &str) {
        let Pairs { bytes, lines } = self;
        lines.retain(|l| !named(bytes, l, name));
    }

    /// Adds a line where Envoy's header list puts it: a pseudo-header after the last
    /// pseudo-header, any other at the end.
    fn insert(&mut self, name: &str, value: &str) {
        let name_start = self.bytes.len();
        self.bytes
            .extend(name.bytes().map(|b| b.to_ascii_lowercase()));
        let value_start = self.bytes.len();
        self.bytes.extend_from_slice(value.as_bytes());
        let line = Line {
            name: (name_start, name.len()),
            value: (value_start, value.len()),
        };
        let at = if name.starts_with(':') {
            self.lines
                .iter()
                .position(|l| !self.part(l.name).starts_with(b":"))
                .unwrap_or(self.lines.len())
        } else {
            self.lines.len()
        };
        self.lines.insert(at, line);
    }
}

fn part(bytes: &[u8], (start, len): (usize, usize)) -> &[u8] {
    bytes
        .get(start..start.saturating_add(len))
        .unwrap_or_default()
}

/// Whether `line` is header `name`: Envoy lowercases the name it is asked for, and the names it
/// holds are lowercase.
fn named(bytes: &[u8], line: &Line, name: &str) -> bool {
    part(bytes, line.name).eq_ignore_ascii_case(name.as_bytes())
}

/// What a view holds of one header map.
#[derive(Debug)]
enum Snapshot {
    /// Not read in this callback.
    Unread,
    /// Envoy did not hand the map over (none in this callback, e.g. response headers while the
    /// request is decoded, or the copy failed): reads and writes go to Envoy one by one, as
    /// without a view, so a failed copy never hides a header.
    Unavailable,
    /// The map as Envoy has it now.
    Read(Pairs),
}

/// The host as one callback sees it (see the module documentation). Allocates nothing until a
/// header map or a property is read.
pub(crate) struct HostView<'a, H: Host> {
    host: &'a mut H,
    maps: [Cell<Snapshot>; 4],
    now_ms: Cell<Option<u64>>,
    /// Properties read: the path (segments joined with NUL) and the value.
    properties: Cell<Vec<(String, Option<Vec<u8>>)>>,
}

impl<'a, H: Host> HostView<'a, H> {
    /// A view over `host` for one callback.
    pub(crate) fn new(host: &'a mut H) -> Self {
        HostView {
            host,
            maps: [
                Cell::new(Snapshot::Unread),
                Cell::new(Snapshot::Unread),
                Cell::new(Snapshot::Unread),
                Cell::new(Snapshot::Unread),
            ],
            now_ms: Cell::new(None),
            properties: Cell::new(Vec::new()),
        }
    }

    /// Runs `f` on the copy of map `slot`, reading it from Envoy first if this callback has
    /// not. (Taken out of its cell while `f` runs: no borrow can fail, nothing can panic.)
    fn read<R>(&self, map: HeaderMap, slot: usize, f: impl FnOnce(&mut Snapshot) -> R) -> R {
        let Some(cell) = self.maps.get(slot) else {
            return f(&mut Snapshot::Unavailable);
        };
        let mut copy = match cell.replace(Snapshot::Unread) {
            Snapshot::Unread => match self.host.header_map_bytes(map) {
                Some(bytes) => Snapshot::Read(Pairs::parse(bytes)),
                None => Snapshot::Unavailable,
            },
            copy => copy,
        };
        let result = f(&mut copy);
        cell.set(copy);
        result
    }

    /// Runs `f` on the copy of map `slot` only if this callback already read it.
    fn update(&mut self, slot: usize, f: impl FnOnce(&mut Snapshot)) {
        if let Some(cell) = self.maps.get_mut(slot) {
            f(cell.get_mut());
        }
    }

    /// Forgets everything read: the host may have run other callbacks or switched to another
    /// request.
    fn forget(&mut self) {
        for cell in &mut self.maps {
            *cell.get_mut() = Snapshot::Unread;
        }
        self.now_ms.set(None);
        self.properties.get_mut().clear();
    }
}

impl<H: Host> Host for HostView<'_, H> {
    fn header(&self, map: HeaderMap, name: &str) -> Option<String> {
        let Some(slot) = slot_of(map) else {
            return self.host.header(map, name);
        };
        self.read(map, slot, |copy| match copy {
            Snapshot::Read(pairs) => pairs.first(name),
            _ => self.host.header(map, name),
        })
    }

    fn headers(&self, map: HeaderMap) -> Vec<(String, String)> {
        let Some(slot) = slot_of(map) else {
            return self.host.headers(map);
        };
        self.read(map, slot, |copy| match copy {
            Snapshot::Read(pairs) => pairs.all(),
            _ => self.host.headers(map),
        })
    }

    fn header_map_bytes(&self, map: HeaderMap) -> Option<Vec<u8>> {
        // A caller asking for the wire bytes gets Envoy's, not a copy of the view's.
        self.host.header_map_bytes(map)
    }

    fn set_header(&mut self, map: HeaderMap, name: &str, value: &str) {
        self.host.set_header(map, name, value);
        if let Some(slot) = slot_of(map) {
            // Envoy's `setCopy`: every line of that name removed, one added.
            self.update(slot, |copy| {
                if let Snapshot::Read(pairs) = copy {
                    pairs.remove(name);
                    pairs.insert(name, value);
                }
            });
        }
    }

    fn add_header(&mut self, map: HeaderMap, name: &str, value: &str) {
        self.host.add_header(map, name, value);
        if let Some(slot) = slot_of(map) {
            self.update(slot, |copy| {
                if let Snapshot::Read(pairs) = copy {
                    if pairs.contains(name) {
                        // Envoy appends a line, or joins the value to the existing one for the
                        // headers its build keeps inline: read the map again if asked.
                        *copy = Snapshot::Unread;
                    } else {
                        pairs.insert(name, value);
                    }
                }
            });
        }
    }

    fn remove_header(&mut self, map: HeaderMap, name: &str) {
        let known_absent = slot_of(map)
            .and_then(|slot| self.maps.get_mut(slot))
            .map(|cell| match cell.get_mut() {
                Snapshot::Read(pairs) => !pairs.contains(name),
                _ => false,
            });
        if known_absent == Some(true) {
            return; // nothing to remove: no host call
        }
        self.host.remove_header(map, name);
        if let Some(slot) = slot_of(map) {
            self.update(slot, |copy| {
                if let Snapshot::Read(pairs) = copy {
                    pairs.remove(name);
                }
            });
        }
    }

    fn request_header_values(&self, name: &str) -> Vec<String> {
        self.read(HeaderMap::Request, 0, |copy| match copy {
            Snapshot::Read(pairs) => pairs.values(name),
            _ => self.host.request_header_values(name),
        })
    }

    fn body(&self, buffer: BodyBuffer, start: usize, max: usize) -> Vec<u8> {
        self.host.body(buffer, start, max)
    }

    fn set_body(
        &mut self,
        buffer: BodyBuffer,
        start: usize,
        size: usize,
        data: &[u8],
    ) -> Result<(), HostError> {
        self.host.set_body(buffer, start, size, data)
    }

    fn property(&self, path: &[&str]) -> Option<Vec<u8>> {
        let mut read = self.properties.take();
        let value = match read
            .iter()
            .find(|(key, _)| key.split('\0').eq(path.iter().copied()))
        {
            Some((_, value)) => value.clone(),
            None => {
                let value = self.host.property(path);
                read.push((path.join("\0"), value.clone()));
                value
            }
        };
        self.properties.set(read);
        value
    }

    fn set_property(&mut self, path: &[&str], value: &[u8]) -> Result<(), HostError> {
        let written = self.host.set_property(path, value);
        // Envoy keeps a written value in filter state, read back under the same first segment
        // or through `filter_state`; attributes such as `source.address` cannot change.
        let first = path.first().copied().unwrap_or_default();
        self.properties.get_mut().retain(|(key, _)| {
            let top = key.split('\0').next().unwrap_or_default();
            top != first && top != "filter_state" && top != "upstream_filter_state"
        });
        // A one-segment path is a filter-state value of the default (bytes) kind: Envoy hands
        // back exactly what was written, so a later member reads the identity hand-off from here.
        if written.is_ok() && path.len() == 1 {
            self.properties
                .get_mut()
                .push((first.to_owned(), Some(value.to_vec())));
        }
        written
    }

    fn shared_get(&self, key: &str) -> Result<SharedValue, HostError> {
        self.host.shared_get(key)
    }

    fn shared_set(&self, key: &str, value: &[u8], cas: Option<u32>) -> Result<(), HostError> {
        self.host.shared_set(key, value, cas)
    }

    fn register_queue(&mut self, name: &str) -> Result<u32, HostError> {
        self.host.register_queue(name)
    }

    fn enqueue(&self, queue_id: u32, data: &[u8]) -> Result<(), HostError> {
        self.host.enqueue(queue_id, data)
    }

    fn dequeue(&self, queue_id: u32) -> Result<Option<Vec<u8>>, HostError> {
        self.host.dequeue(queue_id)
    }

    fn set_tick_period_ms(&mut self, period_ms: u32) -> Result<(), HostError> {
        self.host.set_tick_period_ms(period_ms)
    }

    fn now_ms(&self) -> u64 {
        if let Some(now) = self.now_ms.get() {
            return now;
        }
        let now = self.host.now_ms();
        self.now_ms.set(Some(now));
        now
    }

    fn random_bytes(&self, buf: &mut [u8]) -> Result<(), HostError> {
        self.host.random_bytes(buf)
    }

    fn send_response(
        &mut self,
        status: u16,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Result<(), HostError> {
        let sent = self.host.send_response(status, headers, body);
        // Envoy may run the local reply through the encoder filters at once.
        self.forget();
        sent
    }

    fn resume(&mut self, direction: Direction) -> Result<(), HostError> {
        let resumed = self.host.resume(direction);
        // Envoy may run the next filters (and this request's next callbacks) at once.
        self.forget();
        resumed
    }

    fn set_effective_context(&mut self, context_id: u32) -> Result<(), HostError> {
        let set = self.host.set_effective_context(context_id);
        self.forget();
        set
    }

    fn dispatch_http_call(
        &mut self,
        cluster: &str,
        headers: &[(&str, &str)],
        body: Option<&[u8]>,
        timeout_ms: u32,
    ) -> Result<u32, HostError> {
        self.host
            .dispatch_http_call(cluster, headers, body, timeout_ms)
    }

    fn dispatch_grpc_call(&mut self, call: &GrpcCall<'_>) -> Result<u32, HostError> {
        self.host.dispatch_grpc_call(call)
    }

    fn define_counter(&mut self, name: &str) -> Result<u32, HostError> {
        self.host.define_counter(name)
    }

    fn increment_counter(&self, id: u32, delta: i64) {
        self.host.increment_counter(id, delta)
    }

    fn log(&self, level: LogLevel, message: &str) {
        self.host.log(level, message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{TestEnvoy, TestRequest};
    use crate::wire::{deserialize_pairs, serialize_pairs};

    fn request(headers: &[(&str, &str)]) -> TestRequest {
        let envoy = TestEnvoy::new(1);
        let mut req = envoy.request(0);
        for (name, value) in headers {
            req.add_header(name, value);
        }
        req
    }

    fn first(pairs: &[(String, String)], name: &str) -> Option<String> {
        pairs
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
    }

    #[test]
    fn a_map_is_read_once_per_callback_whatever_is_asked() {
        let mut req = request(&[
            (":method", "GET"),
            (":path", "/a"),
            ("x-tenant", "one"),
            ("x-tenant", "two"),
        ]);
        {
            let view = HostView::new(&mut req);
            assert_eq!(view.request_header(":method").as_deref(), Some("GET"));
            // The first value of a repeated header, as Envoy's get_header_map_value.
            assert_eq!(view.request_header("x-tenant").as_deref(), Some("one"));
            assert_eq!(view.request_header("X-Tenant").as_deref(), Some("one"));
            assert_eq!(view.request_header("absent"), None);
            assert_eq!(view.request_header_values("x-tenant"), ["one", "two"]);
            assert_eq!(view.headers(HeaderMap::Request).len(), 4);
            assert_eq!(view.response_header("server"), None);
        }
        let calls = req.host_calls();
        // One copy of the request map, one of the (empty) response map; nothing else.
        assert_eq!(calls.get("headers"), 2, "{calls:?}");
        assert_eq!(calls.total(), 2, "{calls:?}");
    }

    #[test]
    fn nothing_is_read_or_allocated_until_asked() {
        let mut req = request(&[("x-a", "1")]);
        {
            let mut view = HostView::new(&mut req);
            view.set_request_header("x-b", "2");
            view.remove_request_header("x-c");
        }
        // Without a copy the writes go through as they are (no read just to skip the remove).
        let calls = req.host_calls();
        assert_eq!(
            (
                calls.get("set_header"),
                calls.get("remove_header"),
                calls.total()
            ),
            (1, 1, 2)
        );
    }

    #[test]
    fn writes_reach_envoy_and_later_reads_see_them_as_envoy_would() {
        let mut req = request(&[
            (":method", "POST"),
            (":path", "/a?x=1"),
            (":authority", "api"),
            ("x-a", "1"),
            ("x-a", "2"),
            ("cookie", "c=1"),
        ]);
        let names = [
            ":method",
            ":path",
            ":authority",
            ":scheme",
            "x-a",
            "x-b",
            "cookie",
            "x-new",
        ];
        type Write = (&'static str, &'static str, &'static str);
        let writes: [Write; 14] = [
            ("set", "x-a", "3"),
            ("add", "x-b", "b1"),
            ("add", "x-b", "b2"),
            ("set", ":path", "/b"),
            ("add", ":scheme", "https"),
            ("remove", "cookie", ""),
            ("remove", "cookie", ""),
            ("set", ":method", "GET"),
            ("add", "x-new", "n"),
            ("set", "X-New", "N"),
            ("remove", "x-b", ""),
            ("add", "x-a", "4"),
            ("set", "x-a", ""),
            ("remove", ":authority", ""),
        ];
        let mut view = HostView::new(&mut req);
        let _ = view.request_header(":method"); // the copy exists from here on
        for (op, name, value) in writes {
            match op {
                "set" => view.set_request_header(name, value),
                "add" => view.add_header(HeaderMap::Request, name, value),
                "remove" => view.remove_request_header(name),
                _ => {}
            }
            let envoy = view.host.map(HeaderMap::Request);
            assert_eq!(view.headers(HeaderMap::Request), envoy, "after {op} {name}");
            for name in names {
                assert_eq!(
                    view.request_header(name),
                    first(&envoy, name),
                    "{name} after {op}"
                );
                assert_eq!(
                    view.request_header_values(name),
                    view.host.request_header_values(name),
                    "{name} after {op}"
                );
            }
        }
        let calls = view.host.host_calls();
        // Reads: the first copy, the comparisons through the host above, and one more after
        // each of the two adds to a header that was there (Envoy may have joined the value).
        let direct = names.len() * writes.len();
        assert_eq!(calls.get("headers"), 1 + direct + 2, "{calls:?}");
        assert_eq!(calls.get("header"), 0, "{calls:?}");
        // `cookie`, `x-b` and `:authority` were there; the second `cookie` remove is skipped.
        assert_eq!(calls.get("remove_header"), 3, "{calls:?}");
    }

    #[test]
    fn a_remove_of_a_header_the_copy_shows_absent_costs_nothing() {
        let mut req = request(&[("x-agw-client", "forged")]);
        {
            let mut view = HostView::new(&mut req);
            assert_eq!(view.request_header("origin"), None);
            view.remove_request_header("x-agw-claims");
            view.remove_request_header("x-agw-tier");
            view.remove_request_header("x-agw-client");
            view.remove_request_header("x-agw-client");
            assert_eq!(view.request_header("x-agw-client"), None);
        }
        let calls = req.host_calls();
        assert_eq!((calls.get("headers"), calls.get("remove_header")), (1, 1));
        assert!(req.headers().is_empty());
    }

    /// A host whose header maps cannot be copied (`proxy_get_header_map_pairs` fails).
    struct NoCopies<'a>(&'a mut TestRequest);

    impl Host for NoCopies<'_> {
        fn header(&self, map: HeaderMap, name: &str) -> Option<String> {
            self.0.header(map, name)
        }
        fn headers(&self, map: HeaderMap) -> Vec<(String, String)> {
            Host::headers(&*self.0, map)
        }
        fn header_map_bytes(&self, _: HeaderMap) -> Option<Vec<u8>> {
            let _ = Host::headers(&*self.0, HeaderMap::Request); // counted: the call was made
            None
        }
        fn set_header(&mut self, map: HeaderMap, name: &str, value: &str) {
            self.0.set_header(map, name, value)
        }
        fn add_header(&mut self, map: HeaderMap, name: &str, value: &str) {
            Host::add_header(self.0, map, name, value)
        }
        fn remove_header(&mut self, map: HeaderMap, name: &str) {
            self.0.remove_header(map, name)
        }
        fn body(&self, buffer: BodyBuffer, start: usize, max: usize) -> Vec<u8> {
            self.0.body(buffer, start, max)
        }
        fn set_body(
            &mut self,
            b: BodyBuffer,
            s: usize,
            n: usize,
            d: &[u8],
        ) -> Result<(), HostError> {
            self.0.set_body(b, s, n, d)
        }
        fn property(&self, path: &[&str]) -> Option<Vec<u8>> {
            self.0.property(path)
        }
        fn set_property(&mut self, path: &[&str], value: &[u8]) -> Result<(), HostError> {
            self.0.set_property(path, value)
        }
        fn shared_get(&self, key: &str) -> Result<SharedValue, HostError> {
            self.0.shared_get(key)
        }
        fn shared_set(&self, key: &str, value: &[u8], cas: Option<u32>) -> Result<(), HostError> {
            self.0.shared_set(key, value, cas)
        }
        fn register_queue(&mut self, name: &str) -> Result<u32, HostError> {
            self.0.register_queue(name)
        }
        fn enqueue(&self, id: u32, data: &[u8]) -> Result<(), HostError> {
            self.0.enqueue(id, data)
        }
        fn dequeue(&self, id: u32) -> Result<Option<Vec<u8>>, HostError> {
            self.0.dequeue(id)
        }
        fn set_tick_period_ms(&mut self, period_ms: u32) -> Result<(), HostError> {
            self.0.set_tick_period_ms(period_ms)
        }
        fn now_ms(&self) -> u64 {
            self.0.now_ms()
        }
        fn random_bytes(&self, buf: &mut [u8]) -> Result<(), HostError> {
            self.0.random_bytes(buf)
        }
        fn send_response(&mut self, s: u16, h: &[(&str, &str)], b: &[u8]) -> Result<(), HostError> {
            self.0.send_response(s, h, b)
        }
        fn resume(&mut self, direction: Direction) -> Result<(), HostError> {
            self.0.resume(direction)
        }
        fn set_effective_context(&mut self, id: u32) -> Result<(), HostError> {
            self.0.set_effective_context(id)
        }
        fn dispatch_http_call(
            &mut self,
            cluster: &str,
            headers: &[(&str, &str)],
            body: Option<&[u8]>,
            timeout_ms: u32,
        ) -> Result<u32, HostError> {
            self.0
                .dispatch_http_call(cluster, headers, body, timeout_ms)
        }
        fn dispatch_grpc_call(&mut self, call: &GrpcCall<'_>) -> Result<u32, HostError> {
            self.0.dispatch_grpc_call(call)
        }
        fn define_counter(&mut self, name: &str) -> Result<u32, HostError> {
            self.0.define_counter(name)
        }
        fn increment_counter(&self, id: u32, delta: i64) {
            self.0.increment_counter(id, delta)
        }
        fn log(&self, level: LogLevel, message: &str) {
            self.0.log(level, message)
        }
    }

    #[test]
    fn a_map_that_cannot_be_copied_is_read_and_written_one_call_at_a_time() {
        // Fail closed: a failed copy must not make a forged header look absent.
        let mut req = request(&[("x-agw-client", "forged"), ("x-a", "1")]);
        {
            let mut host = NoCopies(&mut req);
            let mut view = HostView::new(&mut host);
            assert_eq!(view.request_header("x-a").as_deref(), Some("1"));
            assert_eq!(view.request_header("x-a").as_deref(), Some("1"));
            view.remove_request_header("x-agw-client");
            view.remove_request_header("x-absent");
            assert_eq!(view.request_header("x-agw-client"), None);
        }
        let calls = req.host_calls();
        // The one failed copy, then every read and remove through.
        assert_eq!(
            (
                calls.get("headers"),
                calls.get("header"),
                calls.get("remove_header")
            ),
            (1, 3, 2),
            "{calls:?}"
        );
        assert_eq!(req.headers(), [("x-a".to_owned(), "1".to_owned())]);
    }

    #[test]
    fn the_clock_and_each_property_are_read_once_unless_written() {
        let mut req = request(&[]);
        req.set_peer("10.0.0.1:5000");
        {
            let mut view = HostView::new(&mut req);
            let now = view.now_ms();
            assert_eq!(view.now_ms(), now);
            let peer = Some(b"10.0.0.1:5000".to_vec());
            assert_eq!(view.property(&["source", "address"]), peer);
            assert_eq!(view.property(&["source", "address"]), peer);
            assert_eq!(view.property(&["source", "port"]), None);
            assert_eq!(view.property(&["source", "port"]), None);
            assert_eq!(view.property(&["palisade.identity"]), None);
            view.set_property(&["palisade.identity"], b"id").unwrap();
            // The written value is what Envoy would hand back: not read again; an Envoy
            // attribute stays as read.
            assert_eq!(view.property(&["palisade.identity"]), Some(b"id".to_vec()));
            assert_eq!(view.property(&["source", "address"]), peer);
            view.set_property(&["palisade.identity"], b"id2").unwrap();
            assert_eq!(view.property(&["palisade.identity"]), Some(b"id2".to_vec()));
        }
        assert_eq!(req.property(&["palisade.identity"]), Some(b"id2".to_vec()));
        let calls = req.host_calls();
        assert_eq!(calls.get("now_ms"), 1);
        assert_eq!(calls.get("property"), 4, "{calls:?}");
    }

    #[test]
    fn resuming_answering_or_switching_context_forgets_the_copy() {
        let envoy = TestEnvoy::new(1);
        let mut other = envoy.request(0);
        other.add_header("x-who", "other");
        let mut req = envoy.request(0);
        req.add_header("x-who", "me");
        let mut view = HostView::new(&mut req);
        assert_eq!(view.request_header("x-who").as_deref(), Some("me"));
        let _ = view.now_ms();
        view.set_effective_context(other.id()).unwrap();
        assert_eq!(view.request_header("x-who").as_deref(), Some("other"));
        view.resume(Direction::Request).unwrap();
        let _ = view.request_header("x-who");
        view.send_response(403, &[], b"").unwrap();
        let _ = view.request_header("x-who");
        let _ = view.now_ms();
        let calls = other.host_calls();
        assert_eq!(
            (calls.get("headers"), calls.get("now_ms")),
            (3, 1),
            "{calls:?}"
        );
    }

    #[test]
    fn copies_index_the_wire_format_exactly_as_it_is_parsed() {
        let pairs = [
            (":status", "200"),
            ("content-type", "application/json"),
            ("x-empty", ""),
            ("x-a", "1"),
            ("x-a", "2"),
        ];
        let bytes = serialize_pairs(&pairs);
        let mut inputs: Vec<Vec<u8>> = (0..=bytes.len()).map(|n| bytes[..n].to_vec()).collect();
        inputs.push(vec![255, 255, 255, 255]);
        inputs.push(vec![255, 255, 255, 127, 0, 0, 0, 0]);
        // A value that is not UTF-8: skipped by `headers()`, `None` when it is the first.
        let mut latin = serialize_pairs(&[("x-a", "\u{e9}"), ("x-b", "ok")]);
        if let Some(at) = latin.iter().position(|&b| b == 0xc3) {
            latin[at] = 0xe9;
            latin[at + 1] = b' ';
        }
        inputs.push(latin.clone());
        for input in &inputs {
            let copy = Pairs::parse(input.clone());
            assert_eq!(copy.all(), deserialize_pairs(input), "{input:?}");
        }
        let copy = Pairs::parse(latin);
        assert_eq!(copy.first("x-a"), None);
        assert_eq!(copy.first("x-b").as_deref(), Some("ok"));
        assert!(copy.contains("x-a"));
    }

    #[test]
    fn each_callback_reads_envoy_again() {
        // Between callbacks Envoy's other filters run: what they wrote is seen, and a
        // policy's own write of the last callback is not hidden by a stale copy.
        struct Echo;
        impl crate::Policy for Echo {
            const NAME: &'static str = "echo";
            type State = Vec<Option<String>>;
            fn configure(_: &[u8], _: &mut impl Host) -> Result<Self, crate::ConfigError> {
                Ok(Echo)
            }
            fn on_request_headers(
                &self,
                r: &mut crate::Request<'_, Self::State>,
                host: &mut impl Host,
                _: bool,
            ) -> crate::Verdict {
                r.state.push(host.request_header("x-v"));
                host.set_request_header("x-v", "policy");
                r.state.push(host.request_header("x-v"));
                crate::Verdict::Continue
            }
            fn on_request_body(
                &self,
                r: &mut crate::Request<'_, Self::State>,
                host: &mut impl Host,
                _: usize,
                _: bool,
            ) -> crate::Verdict {
                r.state.push(host.request_header("x-v"));
                crate::Verdict::Continue
            }
            fn on_response_headers(
                &self,
                r: &mut crate::Request<'_, Self::State>,
                host: &mut impl Host,
                _: bool,
            ) -> crate::Verdict {
                r.state.push(host.request_header("x-v"));
                r.state.push(host.response_header("x-v"));
                crate::Verdict::Continue
            }
            fn on_done(&self, r: &mut crate::Request<'_, Self::State>, _: &mut impl Host) {
                let seen: Vec<&str> = r
                    .state
                    .iter()
                    .map(|v| v.as_deref().unwrap_or("-"))
                    .collect();
                assert_eq!(seen, ["-", "policy", "policy", "upstream", "u"]);
            }
        }
        let envoy = TestEnvoy::new(1);
        let echo = envoy.deploy::<Echo>("").unwrap();
        let mut req = echo.request(0);
        assert_eq!(
            echo.request_headers(&mut req, false),
            crate::Verdict::Continue
        );
        assert_eq!(
            echo.request_body(&mut req, b"x", true),
            crate::Verdict::Continue
        );
        // Another filter rewrites the header before the response comes.
        req.set_request_header("x-v", "upstream");
        req.add_to(HeaderMap::Response, "x-v", "u");
        req.reset_host_calls();
        assert_eq!(
            echo.response_headers(&mut req, true),
            crate::Verdict::Continue
        );
        let calls = req.host_calls();
        assert_eq!((calls.get("headers"), calls.total()), (2, 2), "{calls:?}");
        echo.done(&mut req);
    }
}
