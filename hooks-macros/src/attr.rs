//! Parsing the attribute's arguments (`after = [a, b], timeout = "5s"`). See [`Args`].

use std::time::Duration;

use proc_macro2::{Span, TokenStream};
use syn::ext::IdentExt;
use syn::parse::{ParseStream, Parser};
use syn::{Expr, Ident, Lit, LitStr, Token};

use crate::duration;

mod kw {
    syn::custom_keyword!(phase);
    syn::custom_keyword!(name);
    syn::custom_keyword!(after);
    syn::custom_keyword!(before);
    syn::custom_keyword!(timeout);
    syn::custom_keyword!(teardown_of);
    syn::custom_keyword!(global);
}

/// Which attribute is being expanded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Attr {
    Startup,
    StopIntake,
    Shutdown,
    Exit,
    /// `#[hook(phase = "...")]`: any phase, named by the `phase` key.
    Hook,
}

impl Attr {
    /// The attribute's name, as the user writes it.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Attr::Startup => "on_startup",
            Attr::StopIntake => "on_stop_intake",
            Attr::Shutdown => "on_shutdown",
            Attr::Exit => "on_exit",
            Attr::Hook => "hook",
        }
    }

    /// The built-in phase the attribute stands for; `None` for `#[hook]`.
    pub(crate) fn builtin_phase(self) -> Option<&'static str> {
        match self {
            Attr::Startup => Some("startup"),
            Attr::StopIntake => Some("stop_intake"),
            Attr::Shutdown => Some("shutdown"),
            Attr::Exit => Some("exit"),
            Attr::Hook => None,
        }
    }

    /// The keys this attribute accepts, for the "unknown key" message.
    fn keys(self) -> &'static str {
        match self {
            Attr::Hook => "phase, name, after, before, timeout, teardown_of, global, crate",
            _ => "name, after, before, timeout, teardown_of, global, crate",
        }
    }
}

/// A hook named in `after`, `before` or `teardown_of`: an identifier or a string.
#[derive(Clone, Debug)]
pub(crate) struct HookName {
    pub(crate) value: String,
    pub(crate) span: Span,
}

/// The parsed arguments of a hook attribute.
#[derive(Debug)]
pub(crate) struct Args {
    /// `phase = "flush_metrics"` (only `#[hook]`).
    pub(crate) phase: Option<LitStr>,
    /// `name = "close"`; the default is the function's name.
    pub(crate) name: Option<LitStr>,
    /// `after = a` or `after = [a, "b"]`.
    pub(crate) after: Vec<HookName>,
    /// `before = a` or `before = [a, "b"]`.
    pub(crate) before: Vec<HookName>,
    /// `timeout = "5s"`.
    pub(crate) timeout: Option<Duration>,
    /// `teardown_of = open_db`.
    pub(crate) teardown_of: Option<HookName>,
    /// `global = false` keeps the hook out of `Builder::registered_hooks()`.
    pub(crate) global: bool,
    /// `crate = "path::to::lifecycle_hooks"` for a renamed or re-exported dependency.
    pub(crate) krate: Option<syn::Path>,
}

/// The keys, for duplicate detection and for the examples in messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Key {
    Phase,
    Name,
    After,
    Before,
    Timeout,
    TeardownOf,
    Global,
    Crate,
}

impl Key {
    fn as_str(self) -> &'static str {
        match self {
            Key::Phase => "phase",
            Key::Name => "name",
            Key::After => "after",
            Key::Before => "before",
            Key::Timeout => "timeout",
            Key::TeardownOf => "teardown_of",
            Key::Global => "global",
            Key::Crate => "crate",
        }
    }

    /// A correct use of the key, quoted in error messages.
    fn example(self) -> &'static str {
        match self {
            Key::Phase => "phase = \"flush_metrics\"",
            Key::Name => "name = \"close_producer\"",
            Key::After => "after = flush_metrics` or `after = [a, \"b\"]",
            Key::Before => "before = flush_metrics` or `before = [a, \"b\"]",
            Key::Timeout => "timeout = \"5s\"",
            Key::TeardownOf => "teardown_of = open_producer",
            Key::Global => "global = false",
            Key::Crate => "crate = \"lifecycle_hooks\"",
        }
    }
}

/// Collects every error, so one build reports them all.
#[derive(Default)]
pub(crate) struct Errors(Option<syn::Error>);

impl Errors {
    pub(crate) fn push(&mut self, error: syn::Error) {
        match &mut self.0 {
            Some(first) => first.combine(error),
            None => self.0 = Some(error),
        }
    }

    pub(crate) fn finish(self) -> Result<(), syn::Error> {
        self.0.map_or(Ok(()), Err)
    }
}

/// Parses the tokens inside `#[on_exit(...)]`.
///
/// # Errors
///
/// Every problem found, combined: an unknown key (listing the valid ones), a key set twice, a
/// value of the wrong shape, a bad duration. Each points at the offending token.
pub(crate) fn parse(attr: Attr, tokens: TokenStream) -> syn::Result<Args> {
    let parser = move |input: ParseStream<'_>| parse_args(attr, input);
    parser.parse2(tokens)
}

fn parse_args(attr: Attr, input: ParseStream<'_>) -> syn::Result<Args> {
    let mut args = Args {
        phase: None,
        name: None,
        after: Vec::new(),
        before: Vec::new(),
        timeout: None,
        teardown_of: None,
        global: true,
        krate: None,
    };
    let mut seen: Vec<Key> = Vec::new();
    let mut errors = Errors::default();
    while !input.is_empty() {
        let (key, key_span) = match parse_key(attr, input) {
            Ok(key) => key,
            Err(error) => {
                errors.push(error);
                if skip_value(input).is_err() {
                    // Not `key = value` at all: the rest cannot be told apart; report this.
                    return Err(errors.finish().expect_err("an error was pushed"));
                }
                continue;
            }
        };
        if !input.peek(Token![=]) {
            return Err(syn::Error::new(
                key_span,
                format!("`{}` needs a value: `{}`", key.as_str(), key.example()),
            ));
        }
        input.parse::<Token![=]>()?;
        let value: Expr = input.parse()?;
        if seen.contains(&key) {
            let hint = match key {
                Key::After | Key::Before => {
                    format!("list every hook in one: `{} = [a, b]`", key.as_str())
                }
                _ => "keep one".to_owned(),
            };
            errors.push(syn::Error::new(
                key_span,
                format!("`{}` set multiple times; {hint}", key.as_str()),
            ));
        } else {
            seen.push(key);
            if let Err(error) = set(&mut args, key, value) {
                errors.push(error);
            }
        }
        if !input.is_empty() && !input.peek(Token![,]) {
            return Err(input.error("expected `,` between two keys: `after = a, timeout = \"5s\"`"));
        }
        let _: Option<Token![,]> = input.parse()?;
    }
    if attr == Attr::Hook && args.phase.is_none() && !seen.contains(&Key::Phase) {
        errors.push(syn::Error::new(
            Span::call_site(),
            "`#[hook]` needs the phase it runs in: `#[hook(phase = \"flush_metrics\")]` (for a \
             built-in phase, `#[on_startup]`, `#[on_stop_intake]`, `#[on_shutdown]` or `#[on_exit]` \
             say it shorter)",
        ));
    }
    errors.finish()?;
    Ok(args)
}

/// Parses a key, or reports an unknown one listing the valid keys.
fn parse_key(attr: Attr, input: ParseStream<'_>) -> syn::Result<(Key, Span)> {
    macro_rules! keyword {
        ($kw:ident, $key:expr) => {
            if input.peek(kw::$kw) {
                let token: kw::$kw = input.parse()?;
                return Ok(($key, token.span));
            }
        };
    }
    if input.peek(kw::phase) && attr != Attr::Hook {
        let token: kw::phase = input.parse()?;
        return Err(syn::Error::new(
            token.span,
            format!(
                "`#[{}]` always runs in phase `{}`; to choose the phase, write \
                 `#[hook(phase = \"...\")]` instead",
                attr.name(),
                attr.builtin_phase().unwrap_or_default(),
            ),
        ));
    }
    keyword!(phase, Key::Phase);
    keyword!(name, Key::Name);
    keyword!(after, Key::After);
    keyword!(before, Key::Before);
    keyword!(timeout, Key::Timeout);
    keyword!(teardown_of, Key::TeardownOf);
    keyword!(global, Key::Global);
    if input.peek(Token![crate]) {
        let token: Token![crate] = input.parse()?;
        return Ok((Key::Crate, token.span));
    }
    if input.peek(Ident::peek_any) {
        let ident = input.call(Ident::parse_any)?;
        return Err(syn::Error::new(
            ident.span(),
            format!(
                "unknown key `{ident}` in `#[{}]`; the keys are: {}",
                attr.name(),
                attr.keys()
            ),
        ));
    }
    Err(input.error(format!(
        "expected `key = value`, like `after = flush_metrics, timeout = \"5s\"`; the keys are: {}",
        attr.keys()
    )))
}

/// After an unknown key: skips `= value` and the comma, so the other keys are still checked.
fn skip_value(input: ParseStream<'_>) -> syn::Result<()> {
    if input.peek(Token![=]) {
        input.parse::<Token![=]>()?;
        input.parse::<Expr>()?;
    }
    if !input.is_empty() {
        input.parse::<Token![,]>()?;
    }
    Ok(())
}

/// Checks and stores one value.
fn set(args: &mut Args, key: Key, value: Expr) -> syn::Result<()> {
    let wrong_shape = |value: &Expr| {
        syn::Error::new_spanned(
            value,
            format!(
                "`{}` takes {}: `{}`",
                key.as_str(),
                shape(key),
                key.example()
            ),
        )
    };
    match key {
        Key::Phase => {
            let lit = string(&value).ok_or_else(|| wrong_shape(&value))?;
            let phase = lit.value();
            if phase.is_empty() || phase.chars().any(char::is_whitespace) {
                return Err(syn::Error::new(
                    lit.span(),
                    "a phase name is a non-empty word without spaces, like \
                     `phase = \"flush_metrics\"`",
                ));
            }
            args.phase = Some(lit);
        }
        Key::Name => {
            let lit = string(&value).ok_or_else(|| wrong_shape(&value))?;
            if lit.value().trim().is_empty() {
                return Err(syn::Error::new(
                    lit.span(),
                    "a hook name cannot be empty; write `name = \"close_producer\"`, or remove \
                     `name` to use the function's name",
                ));
            }
            args.name = Some(lit);
        }
        Key::After | Key::Before => {
            let names = match &value {
                Expr::Array(array) => array
                    .elems
                    .iter()
                    .map(|elem| hook_name(elem).ok_or_else(|| wrong_shape(elem)))
                    .collect::<syn::Result<Vec<_>>>()?,
                single => vec![hook_name(single).ok_or_else(|| wrong_shape(single))?],
            };
            if key == Key::After {
                args.after = names;
            } else {
                args.before = names;
            }
        }
        Key::TeardownOf => {
            args.teardown_of = Some(hook_name(&value).ok_or_else(|| wrong_shape(&value))?);
        }
        Key::Timeout => {
            let lit = string(&value).ok_or_else(|| wrong_shape(&value))?;
            let timeout = duration::parse(&lit.value()).map_err(|message| {
                syn::Error::new(lit.span(), format!("bad `timeout`: {message}"))
            })?;
            if timeout.is_zero() {
                return Err(syn::Error::new(
                    lit.span(),
                    "a zero `timeout` would abandon the hook before it starts; give it time, \
                     like `timeout = \"5s\"`, or remove `timeout` to bound the hook by the \
                     shutdown budget alone",
                ));
            }
            args.timeout = Some(timeout);
        }
        Key::Global => match &value {
            Expr::Lit(syn::ExprLit {
                lit: Lit::Bool(flag),
                ..
            }) => args.global = flag.value,
            other => return Err(wrong_shape(other)),
        },
        Key::Crate => {
            let lit = string(&value).ok_or_else(|| wrong_shape(&value))?;
            let path = lit.parse::<syn::Path>().map_err(|_| {
                syn::Error::new(
                    lit.span(),
                    format!(
                        "`crate` takes the path the lifecycle-hooks crate is reachable at, like \
                         `crate = \"lifecycle_hooks\"` or `crate = \"my_lib::lifecycle_hooks\"`; \
                         `{}` is not a path",
                        lit.value()
                    ),
                )
            })?;
            args.krate = Some(path);
        }
    }
    Ok(())
}

/// What a key's value looks like, in words.
fn shape(key: Key) -> &'static str {
    match key {
        Key::Phase | Key::Name | Key::Crate => "a string",
        Key::Timeout => "a string with a unit",
        Key::After | Key::Before => "hook names (identifiers or strings), one or a list",
        Key::TeardownOf => "the name of a startup hook (an identifier or a string)",
        Key::Global => "`true` or `false`",
    }
}

fn string(value: &Expr) -> Option<LitStr> {
    match value {
        Expr::Lit(syn::ExprLit {
            lit: Lit::Str(lit), ..
        }) => Some(lit.clone()),
        _ => None,
    }
}

/// A hook name: a plain identifier (`flush_metrics`) or a non-empty string (`"flush-metrics"`).
fn hook_name(value: &Expr) -> Option<HookName> {
    match value {
        Expr::Path(path) if path.qself.is_none() && path.attrs.is_empty() => {
            let ident = path.path.get_ident()?;
            Some(HookName {
                value: ident.unraw().to_string(),
                span: ident.span(),
            })
        }
        Expr::Lit(syn::ExprLit {
            lit: Lit::Str(lit), ..
        }) if !lit.value().trim().is_empty() => Some(HookName {
            value: lit.value(),
            span: lit.span(),
        }),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use quote::quote;

    use super::*;

    fn ok(attr: Attr, tokens: TokenStream) -> Args {
        parse(attr, tokens).expect("valid arguments")
    }

    fn err(attr: Attr, tokens: TokenStream) -> String {
        parse(attr, tokens)
            .expect_err("invalid arguments")
            .into_iter()
            .map(|e| e.to_string())
            .collect::<Vec<_>>()
            .join(" | ")
    }

    #[test]
    fn empty() {
        let args = ok(Attr::Exit, quote!());
        assert!(args.name.is_none() && args.after.is_empty() && args.timeout.is_none());
        assert!(args.global);
    }

    #[test]
    fn every_key() {
        let args = ok(
            Attr::Hook,
            quote!(
                phase = "flush",
                name = "n",
                after = [a, "b-c"],
                before = d,
                timeout = "1m30s",
                teardown_of = open,
                global = false,
                crate = "::my::lh",
            ),
        );
        assert_eq!(args.phase.unwrap().value(), "flush");
        assert_eq!(args.name.unwrap().value(), "n");
        let names = |v: &[HookName]| v.iter().map(|n| n.value.clone()).collect::<Vec<_>>();
        assert_eq!(names(&args.after), ["a", "b-c"]);
        assert_eq!(names(&args.before), ["d"]);
        assert_eq!(args.timeout, Some(Duration::from_secs(90)));
        assert_eq!(args.teardown_of.unwrap().value, "open");
        assert!(!args.global);
        let krate = args.krate.unwrap();
        assert_eq!(quote!(#krate).to_string(), ":: my :: lh");
    }

    #[test]
    fn raw_identifiers_name_the_hook_without_r_hash() {
        let args = ok(Attr::Exit, quote!(after = r#type));
        assert_eq!(args.after[0].value, "type");
    }

    #[test]
    fn unknown_key_lists_the_valid_ones() {
        assert_eq!(
            err(Attr::Exit, quote!(timout = "5s")),
            "unknown key `timout` in `#[on_exit]`; the keys are: name, after, before, timeout, \
             teardown_of, global, crate"
        );
        assert!(err(Attr::Hook, quote!(phase = "x", nme = "y")).contains("the keys are: phase,"));
    }

    #[test]
    fn every_error_is_reported() {
        let message = err(Attr::Exit, quote!(a = 1, timeout = "5", b = 2));
        assert_eq!(message.matches(" | ").count(), 2, "{message}");
    }

    #[test]
    fn duplicates() {
        assert_eq!(
            err(Attr::Exit, quote!(timeout = "1s", timeout = "2s")),
            "`timeout` set multiple times; keep one"
        );
        assert_eq!(
            err(Attr::Exit, quote!(after = a, after = b)),
            "`after` set multiple times; list every hook in one: `after = [a, b]`"
        );
    }

    #[test]
    fn shapes() {
        assert_eq!(
            err(Attr::Exit, quote!(timeout = 5)),
            "`timeout` takes a string with a unit: `timeout = \"5s\"`"
        );
        assert!(err(Attr::Exit, quote!(after = a::b)).starts_with("`after` takes hook names"));
        assert!(err(Attr::Exit, quote!(after = [a, 1])).starts_with("`after` takes hook names"));
        assert!(err(Attr::Exit, quote!(global = "no")).starts_with("`global` takes `true`"));
        assert!(err(Attr::Exit, quote!(name = close)).starts_with("`name` takes a string"));
        assert!(err(Attr::Exit, quote!(name = "")).starts_with("a hook name cannot be empty"));
        assert!(err(Attr::Exit, quote!(timeout)).starts_with("`timeout` needs a value"));
        assert!(err(Attr::Exit, quote!("5s")).starts_with("expected `key = value`"));
        assert!(err(Attr::Exit, quote!(after = a before = b)).starts_with("expected `,`"));
        assert!(err(Attr::Exit, quote!(crate = "not a path")).contains("is not a path"));
    }

    #[test]
    fn timeouts() {
        assert!(err(Attr::Exit, quote!(timeout = "5y")).starts_with("bad `timeout`: unknown unit"));
        assert!(err(Attr::Exit, quote!(timeout = "0ms")).starts_with("a zero `timeout`"));
    }

    #[test]
    fn phase_key() {
        assert!(
            err(Attr::Exit, quote!(phase = "x"))
                .starts_with("`#[on_exit]` always runs in phase `exit`; to choose the phase")
        );
        assert!(err(Attr::Hook, quote!()).starts_with("`#[hook]` needs the phase"));
        assert!(err(Attr::Hook, quote!(phase = "")).starts_with("a phase name is a non-empty"));
        assert!(err(Attr::Hook, quote!(phase = "a b")).starts_with("a phase name is a non-empty"));
    }
}
