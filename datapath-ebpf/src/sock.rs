//! Socket creation: who made this socket, for `pname(...)` routing of the packets it sends.

use aya_ebpf::{
    bindings::bpf_sock,
    helpers::{bpf_get_current_comm, bpf_get_socket_cookie},
};

use crate::{gate, maps::SOCK_PNAME};

/// Records the creating task's `comm` under the socket's cookie (nothing while the gate is closed).
#[inline(always)]
pub fn record_creator(sock: *mut bpf_sock) {
    if !gate::is_opened() {
        return;
    }
    // SAFETY: helper on our own context.
    let cookie = unsafe { bpf_get_socket_cookie(sock.cast()) };
    if let Ok(comm) = bpf_get_current_comm() {
        // An LRU map never refuses an insert; a failure would only cost this socket its name.
        let _ = SOCK_PNAME.insert(&cookie, &comm, 0);
    }
}
