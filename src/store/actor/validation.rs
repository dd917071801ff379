//! The validations the actor hands out: a STORE whose validators cannot
//! answer inline is validated in a task of its own (a validator may take
//! seconds), holding its name meanwhile; the task reports its ruling back.

use tokio::sync::mpsc;

use super::{
    Actor, Answer, Batch, Command, Giver, Handback, Lease, Mode, Op, Parked, ServerFault, Settle,
    Ticket, Wait,
};
use crate::store::batch::Validation;
use crate::validator::Resume;

/// What became of a STORE's validation, for the actor (the validators'
/// own answers are [`crate::validator::Verdict`]s, already decided by
/// their links' failure policies).
#[derive(Debug, Clone, Copy)]
pub(crate) enum Ruling {
    Allowed,
    Denied,
    /// The grace period ran out first.
    Abandoned,
}

/// Sends a validation's ruling to the actor when the validation task
/// ends, however it ends: a validator that panics unwinds the task, and
/// its STORE is then refused (a silent end would hold the name forever).
struct Report {
    settle: mpsc::UnboundedSender<Settle>,
    ticket: Ticket,
    ruling: Option<Ruling>,
}

impl Drop for Report {
    fn drop(&mut self) {
        let ruling = self.ruling.take().unwrap_or_else(|| {
            log::error!("a validator panicked: its STORE is refused");
            Ruling::Denied
        });
        let _ = self.settle.send(Settle::Validated {
            ticket: self.ticket,
            ruling,
        });
    }
}

/// Runs a STORE's validators (those that could not answer inline); past
/// the grace period the validation is abandoned.
async fn run_validators(
    validation: Validation,
    name: &[u8],
    value: &[u8],
    resume: Option<Resume>,
) -> Ruling {
    let Validation {
        chain,
        peer,
        expired,
    } = validation;
    tokio::select! {
        // The end of the grace period first: a validation started just
        // after it must not start a validator program.
        biased;
        () = expired.raised() => Ruling::Abandoned,
        allowed = chain.allows_from(name, value, &peer, resume) => match allowed {
            true => Ruling::Allowed,
            false => Ruling::Denied,
        },
    }
}

impl<M: Mode> Actor<M> {
    /// Starts the validators of the STORE at `batch.next`, which holds its
    /// name (and `lease`).
    pub(super) fn validate(
        &mut self,
        batch: Box<Batch>,
        giver: Giver<Handback>,
        lease: Option<Lease>,
    ) {
        let Op::Store {
            name,
            value,
            resume,
        } = batch.ops[batch.next]
        else {
            return self.serve(batch, Some(giver));
        };
        let resume = resume.map(|at| batch.resume(at));
        let (name, value) = (name.to_bytes(&batch.input), value.to_bytes(&batch.input));
        let validation = batch.validation.clone();
        let Some(ticket) = self.park(batch, giver, Wait::Validating { lease }) else {
            // Nobody to answer: the name passes on.
            return self.release(name.as_ref().into(), lease);
        };
        let report = Report {
            settle: self.settle_tx.clone(),
            ticket,
            ruling: None,
        };
        tokio::spawn(async move {
            let mut report = report;
            report.ruling = Some(match validation {
                Some(validation) => run_validators(validation, &name, &value, resume).await,
                // Not reached: only a STORE the inline validators could
                // not finish is validated here, and its batch has a chain.
                // Without one it is refused, never stored unchecked.
                None => Ruling::Denied,
            });
        });
    }

    pub(super) fn validated(&mut self, ticket: Ticket, ruling: Ruling) {
        if !self.waits_for(ticket, |wait| matches!(wait, Wait::Validating { .. })) {
            return;
        }
        let Some(Parked {
            mut batch,
            giver,
            wait: Wait::Validating { lease },
        }) = self.parked.take(ticket)
        else {
            return;
        };
        let answer = match ruling {
            Ruling::Allowed => return self.commit(batch, giver, lease),
            Ruling::Denied => Answer::Refused,
            Ruling::Abandoned => Answer::Fault(Command::Store, &ServerFault::ShuttingDown),
        };
        let name: Box<[u8]> = Self::store_at(&batch).0.into();
        batch.answer_fresh(answer);
        self.release(name, lease);
        self.serve(batch, giver);
    }
}
