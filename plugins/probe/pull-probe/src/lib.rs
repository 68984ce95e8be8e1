//! A probe for `gateway/benches/plugin_abi.rs`, not an example: the pull
//! world of `bench/abi/pull.wit`, where `route` gets a handle to the request
//! and asks the host for what it reads. Does the work of `push-probe`.

wit_bindgen::generate!({
    path: "../../../bench/abi",
    world: "pull-probe",
});

use kylin_gateway::abi_probe::types::Route;
#[path = "../../choice.rs"]
mod choice;

use choice::pick;
use std::cell::Cell;

thread_local! {
    static READS_BODY: Cell<bool> = const { Cell::new(false) };
}

/// The probe's node ids (the pull world has no view of its own).
const NODE_IDS: [&str; 3] = ["n0", "n1", "n2"];

struct PullProbe;

impl Guest for PullProbe {
    fn init(config: String) -> Result<(), String> {
        READS_BODY.set(config == "body");
        Ok(())
    }

    fn route(req: &Request) -> Decision {
        if !READS_BODY.get() {
            return answer(Route::Default);
        }
        match pick(&req.body_prefix(1024), &req.healthy()) {
            Some(i) => answer(Route::Prefer(vec![
                NODE_IDS[i % NODE_IDS.len()].to_string(),
            ])),
            None => answer(Route::Default),
        }
    }
}

fn answer(route: Route) -> Decision {
    Decision {
        route,
        add_headers: Vec::new(),
    }
}

export!(PullProbe);
