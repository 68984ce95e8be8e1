//! A deliberately hostile plugin for the gateway's tests. Its config names
//! the misbehaviour; `route` then misbehaves on every query request whose
//! query string is not `calm` (so tests can also see it behave):
//!
//! - `loop`: spins forever (the epoch deadline must stop it);
//! - `panic`: panics (a trap);
//! - `oom`: allocates (without writing) until the memory cap stops it;
//! - `out-of-bounds`: reads past the end of its linear memory (the sandbox
//!   must trap, whether guard pages or bounds checks keep it in);
//! - `unknown-node`: prefers a node id that is not in the view;
//! - `bad-status`: rejects with status 42;
//! - `init-fail`: fails `init`;
//! - `chatty`: logs a line through the host on every call (rate limiting).

wit_bindgen::generate!({
    path: "../../../wit",
    world: "routing-plugin",
});

use kylin_gateway::plugin::types::{Rejection, Route, TrafficClass};
use std::sync::OnceLock;

static MODE: OnceLock<String> = OnceLock::new();

struct Misbehave;

impl Guest for Misbehave {
    fn init(config: String) -> Result<(), String> {
        if config == "init-fail" {
            return Err("init-fail: refusing to start, as configured".into());
        }
        MODE.set(config)
            .map_err(|_| "init called twice".to_string())
    }

    fn needs() -> Needs {
        Needs {
            classes: vec![TrafficClass::Query],
            body_prefix_len: 0,
            headers: false,
        }
    }

    fn view_changed(_view: View) {}

    fn route(request: Request, _load: ViewLoad) -> Decision {
        let calm = Decision {
            route: Route::Default,
            add_headers: vec![("x-misbehave".into(), "calm".into())],
        };
        if request.query.as_deref() == Some("calm") {
            return calm;
        }
        match MODE.get().map(String::as_str).unwrap_or("") {
            "loop" => {
                let mut n: u64 = 0;
                loop {
                    n = std::hint::black_box(n.wrapping_add(1));
                }
            }
            "panic" => panic!("misbehave: panicking as configured"),
            "oom" => {
                // Asks for memory without writing it: the cap holds when the
                // memory grows, and writing 16 MiB made the call's time
                // depend on how fast the machine backs fresh pages (once
                // over a test's 100 ms deadline on CI, failing as
                // `deadline`, not `memory`).
                let mut hoard: Vec<Vec<u8>> = Vec::new();
                loop {
                    hoard.push(Vec::with_capacity(1 << 20));
                    std::hint::black_box(&hoard);
                }
            }
            "out-of-bounds" => {
                // 64 MiB and just under 4 GiB: past any memory the gateway
                // lets a plugin have, the first inside a guarded memory's
                // reservation, the second at the end of it.
                for address in [64usize << 20, usize::MAX - 15] {
                    // SAFETY: none; the point is an access the sandbox stops.
                    let byte = unsafe { std::ptr::read_volatile(address as *const u8) };
                    std::hint::black_box(byte);
                }
                calm
            }
            "unknown-node" => Decision {
                route: Route::Prefer(vec!["no-such-node".into()]),
                add_headers: Vec::new(),
            },
            "chatty" => {
                kylin_gateway::plugin::host::log(
                    kylin_gateway::plugin::types::LogLevel::Info,
                    &format!("chatty: routing {}", request.path),
                );
                calm
            }
            "bad-status" => Decision {
                route: Route::Reject(Rejection {
                    status: 42,
                    message: "not a status".into(),
                }),
                add_headers: Vec::new(),
            },
            _ => calm,
        }
    }
}

export!(Misbehave);
