//! Upstream answers: truncation fallback, response routing, what to cache, answering the waiters, domain
//! updates.

use super::*;

impl Core {
    pub(super) fn on_response(&mut self, flight: FlightRef, response: &[u8], over_udp: bool, now: Instant) {
        let mut name = std::mem::take(&mut self.name);
        let view = wire::walk_response(response, &mut name);
        self.name = name;
        let Ok(view) = view else {
            return self.retry_or_fail(flight, now);
        };
        let f = self.flights.get_mut(flight.slot, flight.generation).expect("caller holds a live flight");
        let scheme = self.upstreams[f.upstream].scheme;
        if view.truncated() && over_udp && scheme == Scheme::TcpUdp {
            self.stats.tcp_fallbacks += 1;
            f.use_tcp = true;
            f.tries = f.tries.saturating_sub(1);
            return self.send_attempt(flight, now);
        }
        let mut ips = std::mem::take(&mut self.answer_ips);
        ips.clear();
        for (section, record) in &view.records {
            if *section == Section::Answer
                && let Some(ip) = record_ip(response, record)
            {
                ips.push(ip);
            }
        }
        let f = self.flights.get(flight.slot, flight.generation).expect("caller holds a live flight");
        let facts = ResponseFacts {
            query: QueryFacts {
                qname: &f.qname,
                qtype: f.qtype,
                direction: f.direction,
                interface: f.interface.as_deref(),
                src: f.src,
            },
            upstream: f.upstream,
            answer_ips: &ips,
        };
        let action = self.router.response(&facts);
        self.answer_ips = ips;
        match action {
            ResponseAction::Upstream(next) => {
                let f = self.flights.get_mut(flight.slot, flight.generation).expect("caller holds a live flight");
                if f.depth >= MAX_LOOKUP_DEPTH {
                    return self.fail(flight, now);
                }
                self.stats.requeries += 1;
                f.upstream = next;
                f.depth += 1;
                f.tries = 0;
                f.use_tcp = false;
                self.send_attempt(flight, now);
            }
            ResponseAction::Reject => {
                let mut payload = Vec::new();
                let mut scratch = String::new();
                let query = Query::parse(&f.template, &mut scratch).expect("templates are parsed queries");
                wire::empty_response(&f.template, &query, rcode::NOERROR, &mut payload);
                wire::set_id(&mut payload, 0);
                let entry = NewEntry {
                    packed: payload.clone().into(),
                    ttl_offsets: Box::default(),
                    ttls: Box::default(),
                    question_end: f.question_end,
                    lifetime: self.settings.reject_ttl,
                    domains: None,
                };
                self.finish(flight, &payload, Some(entry), now);
            }
            ResponseAction::Accept => {
                let entry = if view.truncated() { None } else { self.entry_for(&f.qname, response, &view) };
                self.finish(flight, response, entry, now);
            }
        }
    }

    /// What to cache for an accepted response, if anything: NOERROR with answers for the smallest answer TTL,
    /// NOERROR without answers and NXDOMAIN for the SOA's negative TTL (RFC 2308), each overridden by
    /// `fixed_domain_ttl` and clamped.
    pub(super) fn entry_for(&self, qname: &str, response: &[u8], view: &wire::ResponseView) -> Option<NewEntry> {
        let code = view.rcode();
        if code != rcode::NOERROR && code != rcode::NXDOMAIN {
            return None;
        }
        let answers = view.records.iter().filter(|(section, _)| *section == Section::Answer);
        let ttl = if code == rcode::NOERROR && answers.clone().next().is_some() {
            answers.map(|(_, record)| record.ttl).min().unwrap_or(0)
        } else {
            let soa = view
                .records
                .iter()
                .find(|(section, record)| *section == Section::Authority && record.rtype == wire::TYPE_SOA);
            match soa.and_then(|(_, record)| soa_minimum(response, record).map(|min| min.min(record.ttl))) {
                Some(ttl) => ttl.min(MAX_NEGATIVE_TTL),
                None => return None,
            }
        };
        let fixed = self.dns.fixed_domain_ttl.iter().find(|(name, _)| name == qname).map(|(_, ttl)| *ttl);
        let ttl = fixed.unwrap_or(ttl).min(MAX_CACHE_TTL);
        let mut packed: Box<[u8]> = response.into();
        wire::set_id(&mut packed, 0);
        let (offsets, ttls): (Vec<u32>, Vec<u32>) = view
            .records
            .iter()
            .filter(|(_, record)| record.rtype != wire::TYPE_OPT)
            .map(|(_, record)| (record.ttl_at as u32, record.ttl))
            .unzip();
        let mut addrs = Vec::new();
        let mut names: Vec<Box<str>> = vec![qname.into()];
        let mut owner = String::new();
        for (section, record) in &view.records {
            if *section != Section::Answer {
                continue;
            }
            if let Some(ip) = record_ip(response, record) {
                addrs.push(ip);
            }
            if wire::read_name(response, record.name_at, &mut owner).is_ok() && !names.iter().any(|n| **n == *owner) {
                names.push(owner.as_str().into());
            }
        }
        let domains = (!addrs.is_empty()).then(|| DomainFacts { addrs: addrs.into(), names: names.into() });
        Some(NewEntry {
            packed,
            ttl_offsets: offsets.into(),
            ttls: ttls.into(),
            question_end: view.question_end,
            lifetime: Duration::from_secs(u64::from(ttl)),
            domains,
        })
    }

    /// Caches `entry`, answers every waiter with `response`, ends the flight.
    pub(super) fn finish(&mut self, flight: FlightRef, response: &[u8], entry: Option<NewEntry>, now: Instant) {
        let Some(f) = self.flights.remove(flight.slot) else { return };
        self.flight_index.remove(&f.key);
        if let Some(entry) = entry {
            let added = entry.domains.clone();
            self.cache.insert(&f.key, entry, now);
            self.drain_cache_removals();
            if let Some(facts) = added.filter(|_| self.cache.contains(&f.key)) {
                for &addr in facts.addrs.iter() {
                    self.push_domain(DomainUpdate::Add { addr, names: facts.names.clone() });
                }
            }
        } else if f.refresh {
            self.cache.refresh_failed(&f.key);
        }
        // Only gated waiters (`ipversion_prefer`) need to know whether the answer has addresses.
        let has_addresses = f.waiters.iter().any(|w| w.gate.is_some())
            && wire::walk_response(response, &mut String::new()).is_ok_and(|view| {
                view.records
                    .iter()
                    .any(|(section, record)| *section == Section::Answer && record_ip(response, record).is_some())
            });
        for waiter in f.waiters {
            if waiter.gate.is_some() {
                self.release_gate(now, waiter, has_addresses);
                continue;
            }
            let mut payload = response.to_vec();
            wire::set_id(&mut payload, waiter.query.id);
            let question_end = waiter.query.question_end();
            if payload.len() >= question_end && f.question_end == question_end {
                payload[wire::HEADER_LEN..question_end].copy_from_slice(&waiter.head[wire::HEADER_LEN..question_end]);
            }
            truncate_for_client(&mut payload, &waiter.query, &waiter.client);
            self.in_flight -= 1;
            self.outputs.push_back(Output::Answer { client: waiter.client, payload });
        }
    }

    pub(super) fn drain_cache_removals(&mut self) {
        let removed: Vec<DomainFacts> = self.cache.take_removed().collect();
        for facts in removed {
            for &addr in facts.addrs.iter() {
                self.push_domain(DomainUpdate::Remove { addr, names: facts.names.clone() });
            }
        }
    }

    pub(super) fn push_domain(&mut self, update: DomainUpdate) {
        if self.domain_updates.len() >= MAX_DOMAIN_UPDATES {
            self.stats.domain_updates_dropped += 1;
            return;
        }
        self.domain_updates.push_back(update);
    }
}

pub(super) fn record_ip(message: &[u8], record: &wire::RecordView) -> Option<IpAddr> {
    let rdata = &message[record.rdata_at..record.end];
    match (record.rtype, rdata.len()) {
        (wire::TYPE_A, 4) => Some(IpAddr::V4(Ipv4Addr::new(rdata[0], rdata[1], rdata[2], rdata[3]))),
        (wire::TYPE_AAAA, 16) => {
            let octets: [u8; 16] = rdata.try_into().ok()?;
            Some(IpAddr::V6(Ipv6Addr::from(octets)))
        }
        _ => None,
    }
}

/// The MINIMUM field of an SOA record (the last of its five numbers).
pub(super) fn soa_minimum(message: &[u8], record: &wire::RecordView) -> Option<u32> {
    let after_mname = wire::skip_name(message, record.rdata_at).ok()?;
    let after_rname = wire::skip_name(message, after_mname).ok()?;
    let at = after_rname + 16;
    if at + 4 > record.end {
        return None;
    }
    Some(u32::from_be_bytes(message[at..at + 4].try_into().ok()?))
}
