//! `cargo run -p relay --example sniff_pcap -- FILE...`: the report `dae sniff --pcap FILE` prints.

use std::{path::Path, process::ExitCode};

use relay::sniff::pcap::{Table, report};

fn main() -> ExitCode {
    let mut status = ExitCode::SUCCESS;
    for file in std::env::args().skip(1) {
        match report(Path::new(&file)) {
            Ok(flows) => print!("{file}\n{}", Table(&flows)),
            Err(e) => {
                eprintln!("sniff_pcap: {e}");
                status = ExitCode::FAILURE;
            }
        }
    }
    status
}
