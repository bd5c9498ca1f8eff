//! One benchmark figure, printed as a JSON line or a table row.

use serde::Serialize;

/// A measured figure with the baseline measured in the same run.
#[derive(Debug, Clone, Serialize)]
pub struct Figure {
    /// Stable name, e.g. `tc_tag_ns_net_v4_64`.
    pub name: String,
    /// The figure.
    pub value: f64,
    /// Its unit (`ns`, `x`, ...).
    pub unit: &'static str,
    /// The baseline it is compared with, in the same unit unless the name says otherwise.
    pub baseline: f64,
    /// How `value` relates to `baseline`; the name's doc says which way is better.
    pub ratio: f64,
}

impl Figure {
    /// Prints the figure.
    pub fn print(&self, json: bool) {
        if json {
            println!("{}", serde_json::to_string(self).unwrap_or_default());
        } else {
            println!(
                "{:<36} {:>12.2} {:<4} baseline {:>12.2}  ratio {:>8.3}",
                self.name, self.value, self.unit, self.baseline, self.ratio
            );
        }
    }
}

/// The median of `samples` (which it sorts).
pub fn median(samples: &mut [f64]) -> f64 {
    samples.sort_by(f64::total_cmp);
    let n = samples.len();
    if n == 0 {
        return f64::NAN;
    }
    if n % 2 == 1 { samples[n / 2] } else { (samples[n / 2 - 1] + samples[n / 2]) / 2.0 }
}
