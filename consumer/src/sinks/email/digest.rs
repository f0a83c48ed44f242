//! The email digest: one email listing a part of an alert storm ([`crate::digest`]).
//!
//! Its HTML part comes from `digestTemplateFile` (default the shipped
//! `email-digest-qscloud` template), every value HTML-escaped as in an alert's email; its text
//! part from the shipped text digest template; its subject is fixed, since Butler's `subject`
//! names one app. Nothing here looks up an app owner: the part arrives addressed.

use std::path::{Path, PathBuf};

use super::permanent;
use crate::settings::{Node, Problems};
use crate::digest::Digest;
use crate::sinks::SinkError;
use crate::sinks::digest_context;
use crate::sinks::template::{one_line, render_html, render_text};

/// The HTML part used when `digestTemplateFile` is not set.
pub const DEFAULT_HTML_TEMPLATE: &str =
    include_str!("../../../templates/email-digest-qscloud.handlebars");
/// The plain-text part of every digest email.
pub const DEFAULT_TEXT_TEMPLATE: &str =
    include_str!("../../../templates/email-digest-qscloud-text.handlebars");

/// Apps listed in one digest email. Mail has no hard size limit, but a table of thousands of
/// rows is unreadable and some servers refuse messages of several megabytes; 500 rows of at
/// most ~1 KB each stay well below the common 10 MB limits.
pub const MAX_ENTRIES: usize = 500;

/// `digestTemplateFile`: in `bodyFileDirectory` when relative and that is set (with Butler's
/// `.handlebars` lookup, like `htmlTemplateFile`), else as written. Must exist and compile.
pub(super) fn template_path(
    node: &Node<'_>,
    dir: Option<&Path>,
    p: &mut Problems,
) -> Option<PathBuf> {
    let name = node.child("digestTemplateFile").opt_string(p)?;
    let key = format!("{}.digestTemplateFile", node.path);
    // An absolute name replaces the directory in `join`, so one lookup serves both.
    super::template_in(dir.unwrap_or(Path::new("")), &name, &key, p)
}

/// `Qlik Cloud: 12 app reloads failed (part 1 of 2)`, on one line.
pub fn subject(digest: &Digest) -> String {
    let reloads = if digest.total == 1 {
        "reload"
    } else {
        "reloads"
    };
    let mut subject = format!("Qlik Cloud: {} app {reloads} failed", digest.total);
    if digest.parts > 1 {
        subject.push_str(&format!(" (part {} of {})", digest.part, digest.parts));
    }
    one_line(&subject)
}

/// Subject, HTML and text of a digest part's email.
pub(super) fn render(
    html_template: &str,
    digest: &Digest,
    tenant_id: &str,
) -> Result<(String, String, String), SinkError> {
    let context = digest_context(digest, tenant_id);
    let html =
        render_html(html_template, &context).map_err(permanent("digest HTML template"))?;
    let text =
        render_text(DEFAULT_TEXT_TEMPLATE, &context).map_err(permanent("digest text template"))?;
    Ok((subject(digest), html, text))
}

/// Whether a part goes in one email: at most [`MAX_ENTRIES`] apps, and it renders. One that
/// does not render is cut down to single entries, which then fail visibly (parked).
pub(super) fn fits(html_template: &str, digest: &Digest, tenant_id: &str) -> bool {
    if digest.entries.len() > MAX_ENTRIES {
        return false;
    }
    render(html_template, digest, tenant_id).is_ok() || digest.entries.len() <= 1
}
