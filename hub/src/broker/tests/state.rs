//! `state`: what a tab says of itself, kept for `stats`.

use super::*;

fn state(visible: bool, battery: Option<f64>) -> ClientMsg {
    ClientMsg::State {
        req: Some(4),
        state: TabState {
            visible,
            charging: battery.map(|_| false),
            battery,
            ms_per_task: Some(2.5),
            paused: !visible,
        },
    }
}

#[test]
fn the_latest_state_shows_in_stats_and_bad_numbers_are_refused() {
    let mut h = Harness::new(BrokerConfig::default());
    assert!(h.b.stats().workers.is_empty());
    assert_eq!(
        h.send(W1, state(false, Some(0.4)))[0].msg,
        ServerMsg::Ok { req: Some(4) }
    );
    h.send(W1, state(true, None));
    let stats = h.b.stats();
    let line = stats.workers.iter().find(|w| w.session == W1).unwrap();
    assert_eq!(
        line.state,
        Some(TabState {
            visible: true,
            charging: None,
            battery: None,
            ms_per_task: Some(2.5),
            paused: false,
        }),
        "listed once it says anything, with what it said last"
    );
    let out = h.send(W1, state(true, Some(1.5)));
    match &out[0].msg {
        ServerMsg::Error { code, message, .. } => {
            assert_eq!(*code, ErrorCode::BadRequest);
            assert!(
                message.contains("battery must be from 0 to 1, not 1.5"),
                "{message}"
            );
        }
        other => panic!("{other:?}"),
    }
    let stats = h.b.stats();
    let line = stats.workers.iter().find(|w| w.session == W1).unwrap();
    assert!(
        line.state.as_ref().unwrap().battery.is_none(),
        "the refused one is not kept"
    );
}
