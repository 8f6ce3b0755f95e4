//! Reading a Prometheus text exposition: every sample with its exact label set, so a test asks
//! for `jobs_dead_total{queue="email"}` and gets that series' value, not the first line that
//! happens to contain the words.

use std::collections::BTreeMap;

/// One sample line: `name{label="value",…} value`.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

/// A scraped exposition.
#[derive(Debug, Clone)]
pub struct Metrics {
    pub text: String,
    pub samples: Vec<Sample>,
}

impl Metrics {
    /// Parses the text format; comment lines and blank lines are skipped, a malformed sample line
    /// panics (the exporter's output is the thing under test).
    pub fn parse(text: &str) -> Self {
        let samples = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .map(|l| parse_line(l).unwrap_or_else(|| panic!("not a sample line: {l:?}")))
            .collect();
        Self {
            text: text.to_owned(),
            samples,
        }
    }

    /// The value of the series `name` with exactly these labels (in any order).
    pub fn get(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let want: BTreeMap<String, String> = labels.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
        self.samples
            .iter()
            .find(|s| s.name == name && s.labels == want)
            .map(|s| s.value)
    }

    /// Like [`Metrics::get`], but panics with the whole exposition when the series is missing.
    #[track_caller]
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.get(name, labels)
            .unwrap_or_else(|| panic!("no series {name}{labels:?} in:\n{}", self.text))
    }

    /// Every sample of `name`.
    pub fn series<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Sample> + 'a {
        self.samples.iter().filter(move |s| s.name == name)
    }

    /// Whether the exposition declares `name` with this `# TYPE`.
    pub fn has_type(&self, name: &str, kind: &str) -> bool {
        self.text.lines().any(|l| l.trim() == format!("# TYPE {name} {kind}"))
    }
}

fn parse_line(line: &str) -> Option<Sample> {
    let name_end = line.find(|c: char| c == '{' || c.is_whitespace())?;
    let (name, mut rest) = line.split_at(name_end);
    let mut labels = BTreeMap::new();
    if let Some(body) = rest.strip_prefix('{') {
        let mut chars = body.char_indices().peekable();
        let close = loop {
            while chars.next_if(|&(_, c)| c == ',' || c == ' ').is_some() {}
            if let Some(&(i, '}')) = chars.peek() {
                break i;
            }
            let key: String = chars.by_ref().map_while(|(_, c)| (c != '=').then_some(c)).collect();
            if chars.next()?.1 != '"' {
                return None;
            }
            let mut value = String::new();
            loop {
                match chars.next()?.1 {
                    '\\' => match chars.next()?.1 {
                        'n' => value.push('\n'),
                        c => value.push(c),
                    },
                    '"' => break,
                    c => value.push(c),
                }
            }
            labels.insert(key, value);
        };
        rest = &body[close + 1..];
    }
    let value = match rest.split_whitespace().next()? {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        v => v.parse().ok()?,
    };
    Some(Sample {
        name: name.to_owned(),
        labels,
        value,
    })
}

/// `GET url` and parse it; panics unless the answer is a 200.
pub async fn scrape(url: &str) -> Metrics {
    let res = reqwest::get(url).await.unwrap_or_else(|e| panic!("GET {url}: {e}"));
    assert_eq!(res.status(), reqwest::StatusCode::OK, "{url}");
    Metrics::parse(&res.text().await.unwrap())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_labels_with_braces_commas_and_escapes() {
        let m = Metrics::parse(
            "# TYPE http_requests_total counter\n\
             http_requests_total{method=\"GET\",route=\"/v1/users/{id}\",status=\"200\"} 3\n\
             odd{a=\"x,y\",b=\"say \\\"hi\\\"\"} 1.5\n\
             plain 0\n\
             h_bucket{le=\"+Inf\"} 2\n",
        );
        assert_eq!(
            m.get(
                "http_requests_total",
                &[("route", "/v1/users/{id}"), ("method", "GET"), ("status", "200")]
            ),
            Some(3.0)
        );
        assert_eq!(
            m.get("http_requests_total", &[("method", "GET")]),
            None,
            "exact label sets"
        );
        assert_eq!(m.get("odd", &[("a", "x,y"), ("b", "say \"hi\"")]), Some(1.5));
        assert_eq!(m.get("plain", &[]), Some(0.0));
        assert_eq!(m.get("h_bucket", &[("le", "+Inf")]), Some(2.0));
        assert!(m.has_type("http_requests_total", "counter"));
    }
}
