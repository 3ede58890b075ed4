//! Quoting input values in messages: an error names the offending value, but a 30 MB line or a
//! field full of control bytes must not be echoed whole. [`clip`] keeps at most
//! [`MAX_QUOTE`] characters, escapes control characters and says how much was left out.

/// The most characters of one input value an error quotes.
pub const MAX_QUOTE: usize = 200;

/// `value` fit for an error message: control characters escaped, cut after [`MAX_QUOTE`]
/// characters with a note of the full length.
pub fn clip(value: &str) -> String {
    clip_to(value, MAX_QUOTE)
}

/// [`clip`] with another length.
pub fn clip_to(value: &str, max: usize) -> String {
    let mut out = String::new();
    for (shown, c) in value.chars().enumerate() {
        if shown == max {
            out.push_str(&format!("… ({} characters in all)", value.chars().count()));
            return out;
        }
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

/// A multi-line message (a parser's report that echoes the offending line) with each line
/// clipped to [`MAX_QUOTE`] characters.
pub fn clip_lines(message: &str) -> String {
    clip_lines_to(message, MAX_QUOTE)
}

/// The lines of a whole error message, each at most `max` characters: the last guard, at
/// rendering, for a message that quoted an input value without clipping it.
pub fn clip_lines_to(message: &str, max: usize) -> String {
    message
        .lines()
        .map(|l| clip_to(l, max))
        .collect::<Vec<_>>()
        .join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_values_are_cut_and_controls_escaped() {
        assert_eq!(clip("P0001"), "P0001");
        assert_eq!(clip("a\0b\n"), "a\\u{0}b\\n");
        let long = "x".repeat(10_000_000);
        let c = clip(&long);
        assert!(c.len() < 300, "{}", c.len());
        assert!(c.ends_with("(10000000 characters in all)"), "{c}");
        let parser = format!("error at line 1\n1 | {long}\n  | ^");
        assert!(clip_lines(&parser).len() < 400);
    }
}
