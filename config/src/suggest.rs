//! "Did you mean" suggestions for misspelt section names and keys.

/// Edit distance counting insertions, deletions, substitutions and swaps of two adjacent characters
/// (optimal string alignment), so `dsn` is one edit from `dns`.
fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let mut rows = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in rows.iter_mut().enumerate() {
        row[0] = i;
    }
    rows[0] = (0..=b.len()).collect();
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut best = (rows[i - 1][j] + 1).min(rows[i][j - 1] + 1).min(rows[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                best = best.min(rows[i - 2][j - 2] + 1);
            }
            rows[i][j] = best;
        }
    }
    rows[a.len()][b.len()]
}

/// The candidate closest to `input`, if it is close enough to be a likely typo: a case-insensitive match, or
/// at most one edit per three characters (at least one).
pub(crate) fn did_you_mean<'a>(input: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<String> {
    let limit = input.chars().count().max(3) / 3;
    candidates
        .into_iter()
        .filter_map(|candidate| {
            let distance = if candidate.eq_ignore_ascii_case(input) { 0 } else { edit_distance(input, candidate) };
            (distance <= limit).then_some((distance, candidate))
        })
        .min_by_key(|&(distance, _)| distance)
        .map(|(_, candidate)| candidate.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECTIONS: [&str; 7] = ["global", "subscription", "node", "group", "routing", "dns", "include"];

    #[test]
    fn close_typos_find_the_intended_name() {
        assert_eq!(did_you_mean("globl", SECTIONS).as_deref(), Some("global"));
        assert_eq!(did_you_mean("dsn", SECTIONS).as_deref(), Some("dns"));
        assert_eq!(did_you_mean("Routing", SECTIONS).as_deref(), Some("routing"));
        assert_eq!(did_you_mean("subscriptions", SECTIONS).as_deref(), Some("subscription"));
    }

    #[test]
    fn unrelated_names_get_no_suggestion() {
        assert_eq!(did_you_mean("firewall", SECTIONS), None);
        assert_eq!(did_you_mean("abc", SECTIONS), None);
    }

    #[test]
    fn edit_distance_counts_adjacent_swaps_once() {
        assert_eq!(edit_distance("dns", "dsn"), 1);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
        assert_eq!(edit_distance("", "abc"), 3);
    }
}
