//! `ipversion_prefer`: a non-preferred A/AAAA question waits on (or is answered from) the preferred family;
//! a preferred one warms the other.

use super::*;

impl Core {
    /// With `ipversion_prefer`, the preferred type to consult before answering `qtype` (the other family).
    pub(super) fn preferred_instead_of(&self, qtype: u16) -> Option<u16> {
        match (self.dns.ipversion_prefer?, qtype) {
            (IpVersionPrefer::V4, wire::TYPE_AAAA) => Some(wire::TYPE_A),
            (IpVersionPrefer::V6, wire::TYPE_A) => Some(wire::TYPE_AAAA),
            _ => None,
        }
    }

    /// With `ipversion_prefer`, the other family to warm the cache with when `qtype` is the preferred one.
    pub(super) fn warm_instead_of(&self, qtype: u16) -> Option<u16> {
        match (self.dns.ipversion_prefer?, qtype) {
            (IpVersionPrefer::V4, wire::TYPE_A) => Some(wire::TYPE_AAAA),
            (IpVersionPrefer::V6, wire::TYPE_AAAA) => Some(wire::TYPE_A),
            _ => None,
        }
    }

    /// A non-preferred A/AAAA query: empty NOERROR when the preferred family is cached with addresses, the
    /// normal path when it is cached without, else wait on its flight (`None`: go on normally).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn prefer_gate(
        &mut self,
        now: Instant,
        message: &[u8],
        query: &Query,
        name: &str,
        cx: &QueryContext<'_>,
        upstream: usize,
        preferred: u16,
        reply: &mut Vec<u8>,
    ) -> Option<Handled> {
        let mut twin = query.clone();
        twin.qtype = preferred;
        let mut key = Vec::new();
        self.build_key(&mut key, upstream, &twin, name, cx);
        match self.cache.has_addresses(&key, now) {
            Some(true) => {
                wire::empty_response(message, query, rcode::NOERROR, reply);
                return Some(Handled::Answered);
            }
            Some(false) => return None,
            None => {}
        }
        let gate = Gate {
            message: message.into(),
            upstream,
            direction: cx.direction,
            interface: cx.interface.map(Into::into),
        };
        let waiter = Waiter {
            client: cx.client,
            head: message[..query.question_end()].into(),
            query: query.clone(),
            gate: Some(Box::new(gate)),
        };
        if let Some(&flight) = self.flight_index.get(&*key)
            && let Some(f) = self.flights.get_mut(flight.slot, flight.generation)
            && f.waiters.len() < self.settings.max_waiters
        {
            f.waiters.push(waiter);
            self.in_flight += 1;
            return Some(Handled::Pending);
        }
        if self.flights.len >= self.settings.max_flights {
            return None;
        }
        let template = with_qtype(message, query, preferred);
        self.in_flight += 1;
        self.start_flight(now, &key, &template, &twin, name, cx, upstream, Some(waiter));
        Some(Handled::Pending)
    }

    /// Starts a waiter-less flight for `other` (the other family) unless it is cached or already in flight.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn warm(
        &mut self,
        now: Instant,
        message: &[u8],
        query: &Query,
        name: &str,
        cx: &QueryContext<'_>,
        upstream: usize,
        other: u16,
    ) {
        let mut twin = query.clone();
        twin.qtype = other;
        let mut key = Vec::new();
        self.build_key(&mut key, upstream, &twin, name, cx);
        if self.cache.has_addresses(&key, now).is_some()
            || self.flight_index.contains_key(&*key)
            || self.flights.len >= self.settings.max_flights
        {
            return;
        }
        let template = with_qtype(message, query, other);
        self.start_flight(now, &key, &template, &twin, name, cx, upstream, None);
    }

    /// Sends a gated query on as asked, after its preferred-family flight ended.
    pub(super) fn release_gate(&mut self, now: Instant, waiter: Waiter, preferred_has_addresses: bool) {
        self.in_flight -= 1;
        let gate = waiter.gate.expect("gated waiters carry their gate");
        if preferred_has_addresses {
            let mut payload = Vec::new();
            wire::empty_response(&waiter.head, &waiter.query, rcode::NOERROR, &mut payload);
            self.outputs.push_back(Output::Answer { client: waiter.client, payload });
            return;
        }
        let mut name = String::new();
        let Ok(query) = Query::parse(&gate.message, &mut name) else { return };
        let cx = QueryContext {
            client: waiter.client,
            direction: gate.direction,
            interface: gate.interface.as_deref(),
            original_dst: None,
        };
        let mut key = Vec::new();
        self.build_key(&mut key, gate.upstream, &query, &name, &cx);
        let mut reply = Vec::new();
        let handled = match self.cache.lookup(&key, now, &gate.message, &mut reply) {
            Hit::Fresh | Hit::Stale { .. } => Handled::Answered,
            Hit::Miss => self.join_or_start(now, &key, &gate.message, &query, &name, &cx, gate.upstream, &mut reply),
        };
        if handled == Handled::Answered {
            truncate_for_client(&mut reply, &query, &waiter.client);
            self.outputs.push_back(Output::Answer { client: waiter.client, payload: reply });
        }
    }
}

/// `message` with its question type replaced by `qtype`.
pub(super) fn with_qtype(message: &[u8], query: &Query, qtype: u16) -> Vec<u8> {
    let mut copy = message.to_vec();
    let at = query.question_end() - 4;
    copy[at..at + 2].copy_from_slice(&qtype.to_be_bytes());
    copy
}
