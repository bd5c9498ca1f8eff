//! TLS ClientHello sniffing over TCP. The first input byte sets the segment size; the rest is the client's
//! byte stream, fed to the TCP sniffer and the record reader one segment more at a time. The message parser
//! also gets the stream directly.
#![no_main]

use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use relay::sniff::{
    tcp::TcpSniffer,
    tls::{HelloReader, client_hello},
};

fuzz_target!(|data: &[u8]| {
    let Some((&segment, stream)) = data.split_first() else { return };
    let _ = client_hello::parse(stream);
    let step = usize::from(segment % 64) + 1;
    let t0 = Instant::now();
    let mut sniffer = TcpSniffer::new(443, Duration::from_millis(30), t0);
    let mut reader = HelloReader::new();
    let mut end = 0;
    while end < stream.len() {
        end = (end + step).min(stream.len());
        let _ = reader.poll(&stream[..end]);
        let _ = sniffer.poll(&stream[..end], t0);
    }
    let _ = sniffer.poll(stream, t0 + Duration::from_millis(31));
});
