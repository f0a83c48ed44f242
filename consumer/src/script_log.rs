//! Script log text as Butler shows it: head and tail lines, sizes, and the limit chat
//! destinations cut it to. Pure text functions, used by enrichment and by the alert itself.

/// Text Butler cuts script logs to for Teams and Slack (their text fields have a limit).
pub const CHAT_SCRIPT_LOG_MAX_CHARS: usize = 2900;

/// `1234567` → `1,234,567`, like JavaScript's `toLocaleString()` in the en-US locale.
pub fn group_thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Head, tail and sizes of a script log, the way Butler counts: lines split on line breaks
/// (`\r\n` or `\n`), characters counted without the line breaks.
pub struct ScriptLogParts {
    pub head: String,
    pub tail: String,
    pub rows: usize,
    pub characters: usize,
}

pub fn script_log_parts(log: &str, head_lines: usize, tail_lines: usize) -> ScriptLogParts {
    let mut lines: Vec<&str> = log.split('\n').map(|l| l.trim_end_matches('\r')).collect();
    // A log ending in a line break has no extra empty line.
    if lines.last() == Some(&"") {
        lines.pop();
    }
    let head = lines[..head_lines.min(lines.len())].join("\n");
    let tail = lines[lines.len().saturating_sub(tail_lines)..].join("\n");
    ScriptLogParts {
        head,
        tail,
        rows: lines.len(),
        characters: lines.iter().map(|l| l.chars().count()).sum(),
    }
}
