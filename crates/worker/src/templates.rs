//! E-mail templates: a subject, a text part and an HTML part per message.
//!
//! Everything in a message is our own text and our own URLs, except one thing a user typed: their
//! name, and only in the greeting. It goes in
//! - only when the recipient's address is verified ([`Recipient::verified`]). A message to an
//!   unverified address (the verification mail itself, and any other mail before the address is
//!   confirmed) greets with a plain "Hello," — whoever signed up with someone else's address cannot
//!   make our mail server deliver their text to that address;
//! - cleaned: invisible and control characters dropped, white space collapsed, at most
//!   [`NAME_MAX_CHARS`] characters (longer names end with "…");
//! - HTML-escaped in the HTML part (the text part is plain text).
//!
//! Links are our own (`PUBLIC_URL` plus a token) and are HTML-escaped in attributes too.

use db::users::User;

/// The longest name a greeting shows, in characters.
pub const NAME_MAX_CHARS: usize = 40;

/// A rendered message body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendered {
    pub subject: String,
    pub text: String,
    pub html: String,
}

/// Who a message goes to, as far as its content is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Recipient<'a> {
    /// The name the user typed.
    pub name: &'a str,
    /// Whether the address has been confirmed by its owner.
    pub verified: bool,
}

impl<'a> From<&'a User> for Recipient<'a> {
    fn from(user: &'a User) -> Self {
        Self {
            name: &user.name,
            verified: user.email_verified_at.is_some(),
        }
    }
}

impl Recipient<'_> {
    /// The name as a greeting may show it: `None` for an unverified address or a name with
    /// nothing visible left.
    pub fn greeting_name(&self) -> Option<String> {
        if !self.verified {
            return None;
        }
        // Line breaks and other white space become spaces; what remains invisible is dropped.
        let visible: String = self
            .name
            .chars()
            .map(|c| if c.is_whitespace() { ' ' } else { c })
            .filter(|c| !domain::text::is_invisible(*c))
            .collect();
        let name = domain::text::collapse_whitespace(&visible);
        if name.is_empty() {
            return None;
        }
        Some(if name.chars().count() > NAME_MAX_CHARS {
            let cut: String = name.chars().take(NAME_MAX_CHARS - 1).collect();
            format!("{}…", cut.trim_end())
        } else {
            name
        })
    }

    /// "Hello Ada," or "Hello,", as (text, html).
    fn greeting(&self) -> (String, String) {
        match self.greeting_name() {
            Some(name) => (format!("Hello {name},"), format!("Hello {},", escape(&name))),
            None => ("Hello,".to_owned(), "Hello,".to_owned()),
        }
    }
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

/// The address is not verified yet (that is what this mail is for), so it never shows the name.
pub fn verify_email<'a>(to: impl Into<Recipient<'a>>, link: &str) -> Rendered {
    let (hello, hello_html) = to.into().greeting();
    let subject = "Confirm your e-mail address".to_owned();
    let text = format!(
        "{hello}\n\nPlease confirm your e-mail address by opening this link (valid for 24 hours):\n\n{link}\n\n\
         If you did not create an account, ignore this message.\n"
    );
    let html = page(
        &subject,
        &format!(
            "<p>{hello_html}</p><p>Please confirm your e-mail address (the link is valid for 24 hours):</p>\
             <p><a href=\"{link}\">Confirm my address</a></p><p>If you did not create an account, ignore this message.</p>",
            link = escape(link)
        ),
    );
    Rendered { subject, text, html }
}

pub fn welcome<'a>(to: impl Into<Recipient<'a>>, public_url: &str) -> Rendered {
    let (hello, hello_html) = to.into().greeting();
    let subject = "Welcome to Task Shop".to_owned();
    let text = format!("{hello}\n\nYour address is confirmed. Welcome aboard!\n\n{public_url}\n");
    let html = page(
        &subject,
        &format!(
            "<p>{hello_html}</p><p>Your address is confirmed. Welcome aboard!</p><p><a href=\"{url}\">Open Task Shop</a></p>",
            url = escape(public_url)
        ),
    );
    Rendered { subject, text, html }
}

pub fn password_reset<'a>(to: impl Into<Recipient<'a>>, link: &str) -> Rendered {
    let (hello, hello_html) = to.into().greeting();
    let subject = "Reset your password".to_owned();
    let text = format!(
        "{hello}\n\nSomeone asked to reset your password. Open this link within 1 hour to choose a new one:\n\n\
         {link}\n\nIf it was not you, ignore this message: your password stays the same.\n"
    );
    let html = page(
        &subject,
        &format!(
            "<p>{hello_html}</p><p>Someone asked to reset your password. This link is valid for 1 hour:</p>\
             <p><a href=\"{link}\">Choose a new password</a></p>\
             <p>If it was not you, ignore this message: your password stays the same.</p>",
            link = escape(link)
        ),
    );
    Rendered { subject, text, html }
}

pub fn sessions_revoked<'a>(to: impl Into<Recipient<'a>>) -> Rendered {
    let (hello, hello_html) = to.into().greeting();
    let subject = "We signed you out of a session".to_owned();
    let text = format!(
        "{hello}\n\nA refresh token of one of your sessions was used twice, which can mean it was stolen. \
         We revoked that session to be safe. If this was not you, change your password.\n"
    );
    let html = page(
        &subject,
        &format!(
            "<p>{hello_html}</p><p>A refresh token of one of your sessions was used twice, which can mean it was stolen. \
             We revoked that session to be safe.</p><p>If this was not you, change your password.</p>"
        ),
    );
    Rendered { subject, text, html }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn verified(name: &str) -> Recipient<'_> {
        Recipient { name, verified: true }
    }

    fn unverified(name: &str) -> Recipient<'_> {
        Recipient { name, verified: false }
    }

    /// Every template, for one recipient.
    fn all(to: Recipient<'_>) -> [Rendered; 4] {
        [
            verify_email(to, "http://x/verify-email?token=a&b"),
            welcome(to, "http://x"),
            password_reset(to, "http://x/reset-password?token=t"),
            sessions_revoked(to),
        ]
    }

    /// The text both parts show after the greeting: everything in them must be ours.
    fn after_greeting(r: &Rendered) -> [&str; 2] {
        [
            r.text.split_once(",\n").map_or("", |(_, rest)| rest),
            r.html.split_once(",</p>").map_or("", |(_, rest)| rest),
        ]
    }

    #[test]
    fn html_is_escaped_and_links_present() {
        let r = welcome(verified("<b>Eve</b> & co"), "http://x/?a=1&b=2");
        assert!(r.html.contains("Hello &lt;b&gt;Eve&lt;/b&gt; &amp; co,"), "{}", r.html);
        assert!(!r.html.contains("<b>Eve"));
        assert!(r.html.contains("http://x/?a=1&amp;b=2"));
        assert!(r.text.contains("Hello <b>Eve</b> & co,"), "the text part is plain text");
        let v = verify_email(unverified("A"), "http://x/verify-email?token=a&b");
        assert!(v.html.contains("http://x/verify-email?token=a&amp;b"));
        assert!(v.text.contains("http://x/verify-email?token=a&b"));
        for r in all(verified("A")) {
            assert!(!r.subject.is_empty() && r.text.starts_with("Hello A,") && r.html.contains("<p>Hello A,</p>"));
        }
    }

    /// Somebody signs up with another person's address and a "name" that is a message of their
    /// own: nothing of it reaches that address — not in the greeting, not anywhere else.
    #[test]
    fn mail_to_an_unverified_address_echoes_no_text_of_the_user() {
        let phishing = "Your account is locked, call +1 555 0100 or visit evil.example";
        for r in all(unverified(phishing)) {
            for part in [&r.subject, &r.text, &r.html] {
                assert!(
                    !part.contains("locked") && !part.contains("evil.example") && !part.contains("555"),
                    "{part}"
                );
            }
            assert!(
                r.text.starts_with("Hello,\n") && r.html.contains("<p>Hello,</p>"),
                "{}",
                r.text
            );
        }
    }

    #[test]
    fn the_name_appears_only_in_the_greeting_and_length_limited() {
        let long = format!("Ada {}", "x".repeat(200));
        for r in all(verified(&long)) {
            let greeting = r.text.lines().next().unwrap_or_default();
            let shown = greeting.trim_start_matches("Hello ").trim_end_matches(',');
            assert_eq!(shown.chars().count(), NAME_MAX_CHARS, "{greeting}");
            assert!(shown.ends_with('…'));
            for part in after_greeting(&r) {
                assert!(!part.contains("xxx") && !part.contains("Ada"), "{part}");
            }
            assert!(!r.subject.contains("Ada"));
        }
        let exact = "y".repeat(NAME_MAX_CHARS);
        assert!(
            welcome(verified(&exact), "http://x")
                .text
                .starts_with(&format!("Hello {exact},"))
        );
    }

    #[test]
    fn invisible_characters_and_line_breaks_never_reach_a_mail() {
        let sneaky = "Ada\u{202E}\u{200B}\r\n\r\nClick\u{00A0}\u{00A0}here\u{FEFF}";
        let r = welcome(verified(sneaky), "http://x");
        let greeting = r.text.lines().next().unwrap_or_default();
        assert_eq!(greeting, "Hello Ada Click here,");
        assert!(r.html.contains("<p>Hello Ada Click here,</p>"));
        // Nothing visible left: the plain greeting.
        assert!(
            welcome(verified("\u{200B}\u{3164} "), "http://x")
                .text
                .starts_with("Hello,\n")
        );
    }
}
