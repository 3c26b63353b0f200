//! The pages' one layout, escaping and language.
//!
//! Pages are small server-rendered HTML strings. Every value that did not come from this
//! module's own literals goes through [`esc`] (text and attribute safe); fragments are built
//! only from escaped values and literals. The layout is mobile-first (375 px), with inline CSS
//! and no front-end build. The language comes from `Accept-Language`: Chinese unless the
//! browser prefers another language, then English.

use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};

/// The page language.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lang {
    /// 中文.
    Zh,
    /// English.
    En,
}

impl Lang {
    /// From `Accept-Language`: the first listed language wins (browsers list by preference);
    /// none → Chinese.
    pub fn from_headers(headers: &HeaderMap) -> Lang {
        let first = headers
            .get(header::ACCEPT_LANGUAGE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(',').next())
            .map(|t| {
                t.split(';')
                    .next()
                    .unwrap_or("")
                    .trim()
                    .to_ascii_lowercase()
            })
            .unwrap_or_default();
        if first.is_empty() || first.starts_with("zh") || first == "*" {
            Lang::Zh
        } else {
            Lang::En
        }
    }

    /// Picks the text of this language.
    pub fn t<'a>(self, zh: &'a str, en: &'a str) -> &'a str {
        match self {
            Lang::Zh => zh,
            Lang::En => en,
        }
    }

    /// `lang` attribute.
    pub fn code(self) -> &'static str {
        match self {
            Lang::Zh => "zh-CN",
            Lang::En => "en",
        }
    }
}

/// Escapes text for HTML text and quoted attributes.
pub fn esc(s: &str) -> String {
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

/// A value as a JavaScript literal safe inside `<script>`.
pub fn js(value: &serde_json::Value) -> String {
    value
        .to_string()
        .replace('<', "\\u003c")
        .replace('>', "\\u003e")
        .replace('&', "\\u0026")
}

/// Fen as `¥3.50`.
pub fn yuan(fen: i64) -> String {
    format!("¥{}", crate::domain::fen::Fen(fen))
}

const STYLE: &str = "*{box-sizing:border-box}body{margin:0;font:16px/1.5 -apple-system,'PingFang SC','Microsoft YaHei',sans-serif;background:#f5f5f5;color:#222}\
header{background:#1677ff;color:#fff;padding:12px 16px;display:flex;justify-content:space-between;align-items:center}\
header a{color:#fff;text-decoration:none;font-size:14px}h1{font-size:18px;margin:0}\
main{max-width:480px;margin:0 auto;padding:12px}.card{background:#fff;border-radius:10px;padding:14px;margin:0 0 12px}\
.row{display:flex;justify-content:space-between;align-items:center;gap:8px;padding:8px 0;border-bottom:1px solid #eee}.row:last-child{border-bottom:0}\
a.row{color:inherit;text-decoration:none}.muted{color:#888;font-size:14px}.price{color:#ff4d4f;font-weight:600}.ok{color:#389e0d}.err{color:#cf1322}\
input[type=tel],input[type=text],input[type=number]{font-size:16px;padding:10px;border:1px solid #ccc;border-radius:8px;width:100%}\
input.qty{width:64px;text-align:center}\
button{font-size:16px;padding:12px;border:0;border-radius:8px;background:#1677ff;color:#fff;width:100%;margin-top:10px}\
button.secondary{background:#fff;color:#1677ff;border:1px solid #1677ff}button:disabled{opacity:.5}\
img.avatar{width:40px;height:40px;border-radius:50%;vertical-align:middle}#status{font-weight:600}";

/// The layout around a page body. `head_extra` must be built from literals and escaped values.
pub fn layout(lang: Lang, title: &str, head_extra: &str, body: &str) -> String {
    format!(
        "<!doctype html><html lang=\"{}\"><head><meta charset=\"utf-8\">\
<meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">\
<title>{}</title><style>{STYLE}</style>{head_extra}</head><body>\
<header><h1>{}</h1><a href=\"/m/account\">{}</a></header><main>{body}</main></body></html>",
        lang.code(),
        esc(title),
        esc(title),
        esc(lang.t("我的", "Account")),
    )
}

/// A complete HTML response.
pub fn page(status: StatusCode, lang: Lang, title: &str, head_extra: &str, body: &str) -> Response {
    (
        status,
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        layout(lang, title, head_extra, body),
    )
        .into_response()
}

/// A page that says what went wrong and what to do, with the given status.
pub fn message(
    status: StatusCode,
    lang: Lang,
    title: &str,
    text: &str,
    link: Option<(&str, &str)>,
) -> Response {
    let link = link
        .map(|(href, label)| format!("<p><a href=\"{}\">{}</a></p>", esc(href), esc(label)))
        .unwrap_or_default();
    let class = if status.is_success() {
        ""
    } else {
        " class=\"err\""
    };
    let body = format!(
        "<div class=\"card\"><p id=\"message\"{class}>{}</p>{link}</div>",
        esc(text)
    );
    page(status, lang, title, "", &body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping_covers_text_and_attributes() {
        assert_eq!(
            esc("<a href=\"x\">'&'</a>"),
            "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;"
        );
        assert_eq!(
            js(&serde_json::json!("</script>")),
            "\"\\u003c/script\\u003e\""
        );
    }

    #[test]
    fn the_language_follows_the_browsers_first_choice() {
        let with = |v: &str| {
            let mut h = HeaderMap::new();
            h.insert(header::ACCEPT_LANGUAGE, v.parse().unwrap());
            Lang::from_headers(&h)
        };
        assert_eq!(Lang::from_headers(&HeaderMap::new()), Lang::Zh);
        assert_eq!(with("zh-CN,zh;q=0.9,en;q=0.8"), Lang::Zh);
        assert_eq!(with("en-US,en;q=0.9,zh;q=0.8"), Lang::En);
        assert_eq!(with("de"), Lang::En);
        assert_eq!(yuan(350), "¥3.50");
    }
}
