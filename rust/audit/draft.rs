//! A request's record while the request is under way: made at arrival with the trail's ticket,
//! filled in by the decision and the forward, handed to the writer when the request is answered.
//! A draft dropped before that (the client went away, a task ended) is recorded as it stands, so
//! every request the gateway saw leaves exactly one record.

use crate::audit::record::{Event, Record, RecordOutcome, RequestRecord, CLIENT_CLOSED};
use crate::audit::trail::{Durable, Ticket};
use crate::clock::Clock;
use crate::forward::Answer;
use crate::ingress::Ingress;
use crate::reason::Refusal;
use crate::router::Notes;

pub struct Draft {
    /// The ticket and the record, until handed over (by `finish`, or on drop).
    held: Option<(Ticket, Box<RequestRecord>)>,
    clock: Clock,
}

impl Draft {
    /// The record of `ingress`, arrived at `arrived_us`, as cancelled until it is answered.
    pub fn new(
        ticket: Ticket,
        ingress: &Ingress,
        request_id: &str,
        arrived_us: u64,
        clock: Clock,
    ) -> Self {
        let record = Box::new(RequestRecord {
            arrived_us,
            request_id: request_id.to_owned(),
            trace_id: Some(ingress.trace.trace_id),
            customer: None,
            method: ingress.method.into(),
            path: ingress.path.as_ref().ok().map(|p| p.path().into()),
            client: ingress.origin.client,
            user_agent: ingress.user_agent.map(Into::into),
            tier: None,
            region: None,
            risk: None,
            step_up: None,
            cells: Vec::new(),
            cell: None,
            retries: 0,
            cell_status: None,
            status: CLIENT_CLOSED,
            outcome: RecordOutcome::Cancelled,
            reason: Some("client_disconnected"),
        });
        Draft {
            held: Some((ticket, record)),
            clock,
        }
    }

    /// Takes what the decision learnt.
    pub fn note(&mut self, notes: Notes) {
        let Some(record) = self.record() else {
            return;
        };
        record.customer = notes.customer;
        record.tier = notes.tier;
        record.region = notes.region;
        record.risk = notes.risk;
        record.step_up = notes.step_up;
        record.cells = notes.cells;
    }

    /// The record as it stands (held until the draft is finished or dropped, so always there
    /// while the draft can be reached).
    pub fn record(&mut self) -> Option<&mut RequestRecord> {
        self.held.as_mut().map(|(_, record)| &mut **record)
    }

    /// Records a refusal as the outcome (what the client is answered unless told otherwise).
    pub fn refused(&mut self, refusal: &Refusal) {
        let Some(record) = self.record() else {
            return;
        };
        record.status = refusal.reason.status();
        record.outcome = RecordOutcome::Refused;
        record.reason = Some(refusal.reason.code());
    }

    /// Records how the forward ended: the cell's answer, or the refusal (`sent`: after the
    /// request may have reached a cell).
    pub fn answered(&mut self, result: &Result<Answer, Refusal>, sent: bool) {
        let Some(record) = self.record() else {
            return;
        };
        match result {
            Ok(answer) => {
                record.status = answer.status;
                record.cell_status = Some(answer.status);
                record.outcome = RecordOutcome::Forwarded;
                record.reason = None;
            }
            Err(refusal) => {
                record.status = refusal.reason.status();
                record.outcome = match sent {
                    true => RecordOutcome::Failed,
                    false => RecordOutcome::Refused,
                };
                record.reason = Some(refusal.reason.code());
            }
        }
    }

    /// Whether the answer must wait until the record is durable.
    pub fn strict(&self) -> bool {
        self.held
            .as_ref()
            .is_some_and(|(ticket, _)| ticket.strict())
    }

    /// Hands the record to the writer, answered now; `durable` is told when it is on disk.
    pub fn finish(mut self, durable: Option<Durable>) {
        self.submit(durable);
    }

    fn submit(&mut self, durable: Option<Durable>) {
        if let Some((ticket, record)) = self.held.take() {
            let time_us = self.clock.now_us();
            ticket.submit(
                Record {
                    time_us,
                    event: Event::Request(record),
                },
                durable,
            );
        }
    }
}

impl Drop for Draft {
    fn drop(&mut self) {
        self.submit(None);
    }
}
