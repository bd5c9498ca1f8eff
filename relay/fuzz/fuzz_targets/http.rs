//! HTTP/1 Host sniffing. The first input byte sets the segment size; the rest is the client's byte stream,
//! fed to the Host reader and the TCP sniffer one segment more at a time.
#![no_main]

use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use relay::sniff::{http::HostReader, tcp::TcpSniffer};

fuzz_target!(|data: &[u8]| {
    let Some((&segment, stream)) = data.split_first() else { return };
    let step = usize::from(segment % 64) + 1;
    let t0 = Instant::now();
    let mut sniffer = TcpSniffer::new(80, Duration::from_millis(30), t0);
    let mut reader = HostReader::new();
    let mut end = 0;
    while end < stream.len() {
        end = (end + step).min(stream.len());
        let _ = reader.poll(&stream[..end]);
        let _ = sniffer.poll(&stream[..end], t0);
    }
});
