//! E-mail templates: a subject, a text part and an HTML part per message. Values are inserted
//! escaped (HTML) and only from trusted sources (our own URLs, validated names).

/// A rendered message body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendered {
    pub subject: String,
    pub text: String,
    pub html: String,
}

fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn page(title: &str, body_html: &str) -> String {
    format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>{}</title></head>\
         <body style=\"font-family:sans-serif;max-width:560px;margin:auto\">{body_html}\
         <p style=\"color:#888;font-size:12px\">Task Shop</p></body></html>",
        escape(title)
    )
}

pub fn verify_email(name: &str, link: &str) -> Rendered {
    let subject = "Confirm your e-mail address".to_owned();
    let text = format!(
        "Hello {name},\n\nPlease confirm your e-mail address by opening this link (valid for 24 hours):\n\n{link}\n\n\
         If you did not create an account, ignore this message.\n"
    );
    let html = page(
        &subject,
        &format!(
            "<p>Hello {},</p><p>Please confirm your e-mail address (the link is valid for 24 hours):</p>\
             <p><a href=\"{link}\">Confirm my address</a></p><p>If you did not create an account, ignore this message.</p>",
            escape(name),
            link = escape(link)
        ),
    );
    Rendered { subject, text, html }
}

pub fn welcome(name: &str, public_url: &str) -> Rendered {
    let subject = "Welcome to Task Shop".to_owned();
    let text = format!("Hello {name},\n\nYour address is confirmed. Welcome aboard!\n\n{public_url}\n");
    let html = page(
        &subject,
        &format!(
            "<p>Hello {},</p><p>Your address is confirmed. Welcome aboard!</p><p><a href=\"{url}\">Open Task Shop</a></p>",
            escape(name),
            url = escape(public_url)
        ),
    );
    Rendered { subject, text, html }
}

pub fn password_reset(name: &str, link: &str) -> Rendered {
    let subject = "Reset your password".to_owned();
    let text = format!(
        "Hello {name},\n\nSomeone asked to reset your password. Open this link within 1 hour to choose a new one:\n\n\
         {link}\n\nIf it was not you, ignore this message: your password stays the same.\n"
    );
    let html = page(
        &subject,
        &format!(
            "<p>Hello {},</p><p>Someone asked to reset your password. This link is valid for 1 hour:</p>\
             <p><a href=\"{link}\">Choose a new password</a></p>\
             <p>If it was not you, ignore this message: your password stays the same.</p>",
            escape(name),
            link = escape(link)
        ),
    );
    Rendered { subject, text, html }
}

pub fn sessions_revoked(name: &str) -> Rendered {
    let subject = "We signed you out of a session".to_owned();
    let text = format!(
        "Hello {name},\n\nA refresh token of one of your sessions was used twice, which can mean it was stolen. \
         We revoked that session to be safe. If this was not you, change your password.\n"
    );
    let html = page(
        &subject,
        &format!(
            "<p>Hello {},</p><p>A refresh token of one of your sessions was used twice, which can mean it was stolen. \
             We revoked that session to be safe.</p><p>If this was not you, change your password.</p>",
            escape(name)
        ),
    );
    Rendered { subject, text, html }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn html_is_escaped_and_links_present() {
        let r = verify_email("<b>Eve</b> & co", "http://x/verify-email?token=a&b");
        assert!(r.html.contains("&lt;b&gt;Eve&lt;/b&gt; &amp; co"));
        assert!(!r.html.contains("<b>Eve"));
        assert!(r.html.contains("http://x/verify-email?token=a&amp;b"));
        assert!(r.text.contains("http://x/verify-email?token=a&b"));
        for r in [
            welcome("A", "http://x"),
            password_reset("A", "http://x/r"),
            sessions_revoked("A"),
        ] {
            assert!(!r.subject.is_empty() && r.text.contains("Hello A") && r.html.contains("Hello A"));
        }
    }
}
