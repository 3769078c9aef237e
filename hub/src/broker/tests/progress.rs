//! `progress`, under the manual clock: kept for `stats`, passed to the submitter's inbox, and
//! extending the lease.

use super::*;
use taskhub_core::protocol::{MAX_PROGRESS_SHOWN, TaskProgress};

fn progress(task: TaskId, fraction: f64, message: Option<&str>) -> ClientMsg {
    ClientMsg::Progress {
        req: None,
        task,
        fraction,
        message: message.map(String::from),
    }
}

fn shown(h: &Harness, who: SessionId) -> Vec<TaskProgress> {
    let stats = h.b.stats();
    let line = stats.workers.iter().find(|w| w.session == who).unwrap();
    line.progress.clone()
}

#[test]
fn the_submitter_hears_it_stats_show_it_and_the_lease_is_extended() {
    let mut h = Harness::new(BrokerConfig::default());
    let inbox = QueueName::inbox(P);
    let id = h.put_with("jobs", json!(1), Some(inbox.as_str()), None);
    assert_eq!(h.consume(W1, "jobs", 1), vec![id]);
    h.advance(20_000);
    let out = h.send(W1, progress(id, 0.25, Some("tile 3 of 12")));
    assert_eq!(
        out,
        vec![Output {
            to: P,
            msg: ServerMsg::Progress {
                task: id,
                fraction: 0.25,
                message: Some("tile 3 of 12".into()),
            },
            droppable: true,
            gate: Gate::InTurn,
        }],
        "to the submitter only, droppable, and no answer without req"
    );
    assert_eq!(
        shown(&h, W1),
        vec![TaskProgress {
            task: id,
            queue: q("jobs"),
            fraction: 0.25,
            message: Some("tile 3 of 12".into()),
        }]
    );
    // Ack-wait is 30 s from the report, not from the delivery: 20 s later it still holds.
    assert!(h.advance(20_000).is_empty(), "the lease was extended");
    // Done: no longer shown.
    h.ack(W1, id, json!(1));
    assert!(shown(&h, W1).is_empty());
}

#[test]
fn only_the_lease_holder_may_report_and_the_numbers_are_checked() {
    let mut h = Harness::new(BrokerConfig::default());
    let id = h.put("jobs", json!(1));
    h.consume(W1, "jobs", 1);
    let code = |out: &[Output]| match &out[0].msg {
        ServerMsg::Error { code, message, .. } => (*code, message.clone()),
        other => panic!("{other:?}"),
    };
    let mut asked = progress(id, 0.5, None);
    asked.set_req(3);
    assert_eq!(code(&h.send(W2, asked.clone())).0, ErrorCode::UnknownTask);
    let (c, message) = code(&h.send(W1, progress(id, 2.0, None)));
    assert_eq!(c, ErrorCode::BadRequest);
    assert!(message.contains("from 0 to 1, not 2"), "{message}");
    assert_eq!(
        code(&h.send(W1, progress(id, f64::NAN, None))).0,
        ErrorCode::BadRequest
    );
    assert!(
        shown(&h, W1).is_empty(),
        "nothing kept from refused reports"
    );
    assert_eq!(
        h.send(W1, asked),
        vec![Output {
            to: W1,
            msg: ServerMsg::Ok { req: Some(3) },
            droppable: false,
            gate: Gate::InTurn,
        }]
    );
}

#[test]
fn a_reply_queue_is_not_filled_with_reports_and_stats_keep_the_latest_few() {
    let mut h = Harness::new(BrokerConfig::default());
    let n = MAX_PROGRESS_SHOWN + 2;
    let ids: Vec<TaskId> = (0..n)
        .map(|i| h.put_with("jobs", json!(i), Some("results"), None))
        .collect();
    h.consume(W1, "jobs", n as u32);
    for (i, id) in ids.iter().enumerate() {
        h.advance(1);
        let out = h.send(W1, progress(*id, 0.1, None));
        assert!(out.is_empty(), "nothing goes to a reply queue: {out:?}");
        if i == 0 {
            h.send(W1, progress(*id, 0.9, Some("again")));
        }
    }
    let latest: Vec<TaskId> = shown(&h, W1).iter().map(|p| p.task).collect();
    let mut expected: Vec<TaskId> = ids[2..].to_vec();
    expected.reverse();
    assert_eq!(
        latest, expected,
        "the most recent {MAX_PROGRESS_SHOWN}, newest first"
    );
    assert!(
        h.get("results", 0)
            .iter()
            .all(|o| matches!(o.msg, ServerMsg::Empty { .. }))
    );
}
