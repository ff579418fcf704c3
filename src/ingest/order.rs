//! The collector's ordering primitive, without I/O: batches are started in arrival order,
//! finish in any order (each on its own database connection), and are released strictly in
//! the order they were started. The writer acks a batch only when it is released, so acks go
//! out in arrival order; a batch that has not finished holds every batch behind it; and after
//! a failure the writer collects the failed batch and every batch behind it, released in
//! order, as its retry queue.

use std::collections::VecDeque;

/// Which started batch a finished one is (handed out by [`InOrder::start`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Ticket(u64);

/// Items started in order, finished in any order, released in the order they were started.
#[derive(Debug)]
pub(crate) struct InOrder<T> {
    /// Started and not yet released, oldest first: `None` while still running.
    slots: VecDeque<Option<T>>,
    /// The ticket of `slots[0]`.
    first: u64,
}

impl<T> Default for InOrder<T> {
    fn default() -> Self {
        InOrder {
            slots: VecDeque::new(),
            first: 0,
        }
    }
}

impl<T> InOrder<T> {
    /// Starts the next item; it is released after every item started before it.
    pub(crate) fn start(&mut self) -> Ticket {
        let ticket = Ticket(self.first + self.slots.len() as u64);
        self.slots.push_back(None);
        ticket
    }

    /// Records that the item of `ticket` finished with `item`. A ticket already finished or
    /// released is ignored (each ticket finishes once).
    pub(crate) fn finish(&mut self, ticket: Ticket, item: T) {
        let slot = ticket
            .0
            .checked_sub(self.first)
            .and_then(|i| usize::try_from(i).ok())
            .and_then(|i| self.slots.get_mut(i));
        if let Some(slot @ None) = slot {
            *slot = Some(item);
        }
    }

    /// The oldest started item, once it has finished; `None` while it is still running
    /// (whatever finished behind it waits) or when nothing was started.
    pub(crate) fn release(&mut self) -> Option<T> {
        if !matches!(self.slots.front(), Some(Some(_))) {
            return None;
        }
        self.first += 1;
        self.slots.pop_front().flatten()
    }

    /// Items started and not yet released.
    pub(crate) fn len(&self) -> usize {
        self.slots.len()
    }

    /// Whether every started item was released.
    pub(crate) fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Releases everything that can be released now.
    fn drain<T>(q: &mut InOrder<T>) -> Vec<T> {
        std::iter::from_fn(|| q.release()).collect()
    }

    #[test]
    fn out_of_order_completions_are_released_in_start_order() {
        let mut q = InOrder::default();
        let t: Vec<Ticket> = (0..4).map(|_| q.start()).collect();
        q.finish(t[2], "c");
        q.finish(t[1], "b");
        q.finish(t[3], "d");
        assert_eq!(
            drain(&mut q),
            Vec::<&str>::new(),
            "the oldest is still running"
        );
        q.finish(t[0], "a");
        assert_eq!(drain(&mut q), vec!["a", "b", "c", "d"]);
        assert!(q.is_empty());
    }

    #[test]
    fn an_unfinished_batch_holds_everything_behind_it() {
        let mut q = InOrder::default();
        let a = q.start();
        let b = q.start();
        let c = q.start();
        q.finish(a, 'a');
        q.finish(c, 'c');
        assert_eq!(drain(&mut q), vec!['a']);
        assert_eq!(q.len(), 2, "b running, c finished behind it");
        // Started later, finished at once: still behind b.
        let d = q.start();
        q.finish(d, 'd');
        assert_eq!(drain(&mut q), Vec::<char>::new());
        q.finish(b, 'b');
        assert_eq!(drain(&mut q), vec!['b', 'c', 'd']);
    }

    /// The writer's failure path: the first batch fails, the ones behind it roll back
    /// (finishing before it), and the retry queue built from the releases is in arrival
    /// order, so the retried batches start, and are acked, in arrival order again.
    #[test]
    fn retry_queue_after_a_failure_keeps_arrival_order() {
        let mut q = InOrder::default();
        let tickets: Vec<Ticket> = (0..3).map(|_| q.start()).collect();
        q.finish(tickets[2], ("batch 2", "aborted"));
        q.finish(tickets[1], ("batch 1", "aborted"));
        q.finish(tickets[0], ("batch 0", "failed"));
        let retry: Vec<&str> = drain(&mut q).into_iter().map(|(b, _)| b).collect();
        assert_eq!(retry, vec!["batch 0", "batch 1", "batch 2"]);

        // Retried in that order: they finish in reverse, and are released in order.
        assert!(q.is_empty());
        let again: Vec<(Ticket, &str)> = retry.iter().map(|b| (q.start(), *b)).collect();
        for (t, b) in again.iter().rev() {
            q.finish(*t, (*b, "committed"));
        }
        let acked: Vec<&str> = drain(&mut q).into_iter().map(|(b, _)| b).collect();
        assert_eq!(acked, retry);
    }

    #[test]
    fn a_ticket_finishes_once() {
        let mut q = InOrder::default();
        let a = q.start();
        q.finish(a, 1);
        q.finish(a, 2);
        assert_eq!(q.release(), Some(1));
        q.finish(a, 3);
        assert_eq!(q.release(), None);
        assert!(q.is_empty());
    }
}
