//! A probe for `gateway/benches/plugin_abi.rs`, not an example: the
//! `routing-plugin` world, where the request is pushed into `route` as a
//! record. With config `body` it hashes the body prefix and prefers one of
//! the healthy nodes; otherwise it answers `default` having read nothing.
//! `pull-probe` does the same work through the probe's pull world.

wit_bindgen::generate!({
    path: "../../../wit",
    world: "routing-plugin",
});

use kylin_gateway::plugin::types::{Route, TrafficClass};
#[path = "../../choice.rs"]
mod choice;

use choice::pick;
use std::cell::{Cell, RefCell};

thread_local! {
    static READS_BODY: Cell<bool> = const { Cell::new(false) };
    static NODE_IDS: RefCell<Vec<String>> = const { RefCell::new(Vec::new()) };
}

struct PushProbe;

impl Guest for PushProbe {
    fn init(config: String) -> Result<(), String> {
        READS_BODY.set(config == "body");
        Ok(())
    }

    fn needs() -> Needs {
        Needs {
            classes: vec![TrafficClass::Query, TrafficClass::Job, TrafficClass::Other],
            body_prefix_len: if READS_BODY.get() { 1024 } else { 0 },
            headers: false,
        }
    }

    fn view_changed(view: View) {
        NODE_IDS.with_borrow_mut(|ids| *ids = view.nodes.into_iter().map(|n| n.id).collect());
    }

    fn route(request: Request, load: ViewLoad) -> Decision {
        if !READS_BODY.get() {
            return answer(Route::Default);
        }
        let healthy: Vec<bool> = load.nodes.iter().map(|n| n.healthy).collect();
        match pick(&request.body_prefix, &healthy) {
            Some(i) => answer(Route::Prefer(vec![
                NODE_IDS.with_borrow(|ids| ids[i].clone()),
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

export!(PushProbe);
