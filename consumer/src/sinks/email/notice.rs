//! The email for a notice from the consumer itself ([`crate::alert::Notice`], the webhook
//! watchdog): subject = the title on one line, plain-text part = the text, HTML part = both
//! HTML-escaped in a simple page. No template: Butler's templates name an app, and a notice has
//! none. It goes to the configured `recipients` only (see [`super::EmailSink`]'s
//! `recipients`): there is no app, hence no app owner.

use crate::alert::Notice;
use crate::sinks::template::one_line;

/// Subject, HTML and text of a notice's email. The title and text hold values from Qlik (a
/// webhook's name, its `disabledReason`), so the HTML escapes every one of them.
pub(super) fn render(notice: &Notice) -> (String, String, String) {
    let escape = handlebars::html_escape;
    let mut html = format!(
        "<!DOCTYPE html>\n<html>\n<body>\n<h2>{}</h2>\n",
        escape(&one_line(&notice.title))
    );
    // Blank lines part paragraphs; other line breaks stay line breaks.
    for paragraph in notice.text.split("\n\n") {
        let lines: Vec<String> = paragraph
            .lines()
            .filter(|line| !line.trim().is_empty())
            .map(escape)
            .collect();
        if !lines.is_empty() {
            html.push_str(&format!("<p>{}</p>\n", lines.join("<br>\n")));
        }
    }
    html.push_str("</body>\n</html>\n");
    (one_line(&notice.title), html, notice.text.clone())
}
