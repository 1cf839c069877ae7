#![no_main]
//! The inference-router's route table (`AGENTMESH_ROUTER_ROUTES_FILE`,
//! YAML): pools, routes with weighted splits and fallbacks, retries,
//! tenant limits, cache and prices.
//!
//! Properties: a table either loads or is refused with the path of the bad
//! field; every model of a loaded table plans to pools the table defines,
//! whatever the roll; a model without a route plans only through `*`.

use inference_router::RoutesError;
use inference_router::fuzzing::{CATCH_ALL, parse_routes};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let table = match parse_routes(text) {
        Ok(table) => table,
        Err(RoutesError::Invalid { path, .. }) => {
            assert!(!path.is_empty());
            return;
        }
        Err(e) => panic!("a parse error that is not Invalid: {e}"),
    };
    let rolls = [0, 1, 7, u64::MAX / 2, u64::MAX - 1, u64::MAX];
    for model in table.routes.keys() {
        for roll in rolls {
            let plan = table.plan(model, roll).expect("a routed model plans");
            assert!(!plan.is_empty());
            for (pool, other_model) in &plan {
                assert!(
                    table.pools.contains_key(pool),
                    "{model} plans to pool {pool}"
                );
                if let Some(other) = other_model {
                    assert!(
                        table.routes.contains_key(other),
                        "{model} falls back to {other}"
                    );
                }
            }
        }
    }
    let unrouted = "\u{0}no-such-model";
    assert_eq!(
        table.plan(unrouted, 3).is_some(),
        table.routes.contains_key(CATCH_ALL)
    );
});
