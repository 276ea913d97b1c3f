//! Turning a hook function into the function plus its hook item. See [`expand`].
//!
//! For `#[on_exit(after = flush_metrics)] async fn close_producer() { .. }` the output is:
//!
//! ```text
//! async fn close_producer() { .. }                 // unchanged, still callable
//!
//! #[doc(hidden)]
//! struct close_producer {}                          // type namespace: no clash with the fn
//! impl lifecycle_hooks::__private::MacroHook for close_producer {
//!     fn spec() -> HookSpec { HookSpec::new(Phase::EXIT, "close_producer", ..).after(..) }
//! }
//! lifecycle_hooks::__private::register!(close_producer, "close_producer"); // linkme slice
//! ```
//!
//! `hooks![close_producer]` then names the struct. A braced struct lives only in the type
//! namespace, so it coexists with the function of the same name; unlike a module, its impl
//! refers to the function by plain name, which also works for functions declared in a block.

use proc_macro2::{Span, TokenStream};
use quote::{ToTokens, format_ident, quote, quote_spanned};
use syn::ext::IdentExt;
use syn::spanned::Spanned;
use syn::{FnArg, Ident, Item, ItemFn, ReturnType, Signature, Type};

use crate::attr::{self, Args, Attr, Errors};

/// Expands one hook attribute.
///
/// Never fails: on error it returns the original item unchanged, a stand-in hook item (so that
/// `hooks![name]` elsewhere does not add errors of its own) and a `compile_error!` per problem.
pub(crate) fn expand(attr: Attr, args: TokenStream, item: TokenStream) -> TokenStream {
    let function = match syn::parse2::<Item>(item.clone()) {
        Ok(Item::Fn(function)) => function,
        Ok(other) => return with_errors(item, not_a_function(attr, &other)),
        Err(error) => return with_errors(item, error),
    };
    let mut errors = Errors::default();
    let args = attr::parse(attr, args).map_err(|e| errors.push(e)).ok();
    let shape = check_signature(attr, &function.sig)
        .map_err(|e| errors.push(e))
        .ok();
    if let (Some(args), Some(_)) = (&args, &shape) {
        check_self_reference(&function, args).unwrap_or_else(|e| errors.push(e));
    }
    match (errors.finish(), args, shape) {
        (Ok(()), Some(args), Some(shape)) => generate(attr, &function, &args, &shape),
        (result, args, _) => {
            let krate = args.and_then(|a| a.krate).unwrap_or_else(default_crate);
            let mut out = function.to_token_stream();
            // A method (`self`) sits in an impl block, where a stand-in struct is no item.
            if function.sig.receiver().is_none() {
                out.extend(stand_in(&function, &krate));
            }
            if let Err(error) = result {
                out.extend(error.to_compile_error());
            }
            out
        }
    }
}

fn with_errors(mut item: TokenStream, error: syn::Error) -> TokenStream {
    item.extend(error.to_compile_error());
    item
}

fn default_crate() -> syn::Path {
    syn::parse_quote!(::lifecycle_hooks)
}

/// The error for an attribute on a struct, a module, a `use`...: at the item's keyword.
fn not_a_function(attr: Attr, item: &Item) -> syn::Error {
    let (what, at): (&str, &dyn ToTokens) = match item {
        Item::Const(i) => ("a const", &i.const_token),
        Item::Enum(i) => ("an enum", &i.enum_token),
        Item::ExternCrate(i) => ("an `extern crate`", &i.extern_token),
        Item::ForeignMod(i) => ("an `extern` block", &i.abi),
        Item::Impl(i) => ("an impl block", &i.impl_token),
        Item::Macro(i) => ("a macro invocation", &i.mac.path),
        Item::Mod(i) => ("a module", &i.mod_token),
        Item::Static(i) => ("a static", &i.static_token),
        Item::Struct(i) => ("a struct", &i.struct_token),
        Item::Trait(i) => ("a trait", &i.trait_token),
        Item::TraitAlias(i) => ("a trait alias", &i.trait_token),
        Item::Type(i) => ("a type alias", &i.type_token),
        Item::Union(i) => ("a union", &i.union_token),
        Item::Use(i) => ("a `use`", &i.use_token),
        _ => ("this item", item),
    };
    syn::Error::new_spanned(
        at,
        format!(
            "`#[{}]` goes on a function, not on {what}; write it on an `async fn` (or a plain \
             `fn`) that takes nothing or a `HookContext`",
            attr.name()
        ),
    )
}

/// What the generated code needs to know about the function's signature.
#[derive(Debug)]
struct Shape {
    is_async: bool,
    /// The type of the `HookContext` argument, if the function takes one.
    context: Option<Type>,
    /// Where the return type is (the function name when there is none).
    output_span: Span,
}

/// Checks that the function is one the framework can call: no generics, no `self`, nothing or a
/// `HookContext` in, `()` or `Result<(), E>` out. Every problem is reported at its token.
fn check_signature(attr: Attr, sig: &Signature) -> syn::Result<Shape> {
    let name = attr.name();
    let mut errors = Errors::default();
    if let Some(unsafety) = &sig.unsafety {
        errors.push(syn::Error::new_spanned(
            unsafety,
            format!(
                "a `#[{name}]` function cannot be `unsafe`: the framework calls it with no \
                 precondition; make it safe and put `unsafe` blocks inside"
            ),
        ));
    }
    if let Some(abi) = &sig.abi {
        errors.push(syn::Error::new_spanned(
            abi,
            format!(
                "a `#[{name}]` function cannot have an `extern` ABI; remove `{}`",
                abi.to_token_stream()
            ),
        ));
    }
    if !sig.generics.params.is_empty() {
        errors.push(syn::Error::new_spanned(
            &sig.generics,
            format!(
                "a `#[{name}]` function cannot be generic: the framework calls it with no type, \
                 lifetime or const arguments; remove the parameters (or call a generic function \
                 from a non-generic hook)"
            ),
        ));
    } else if let Some(clause) = &sig.generics.where_clause {
        errors.push(syn::Error::new_spanned(
            clause,
            format!("a `#[{name}]` function cannot have a `where` clause; remove it"),
        ));
    }
    if let Some(variadic) = &sig.variadic {
        errors.push(syn::Error::new_spanned(
            variadic,
            format!("a `#[{name}]` function takes nothing or a `HookContext`; remove `...`"),
        ));
    }

    let mut context = None;
    for (index, input) in sig.inputs.iter().enumerate() {
        match input {
            FnArg::Receiver(receiver) => errors.push(syn::Error::new_spanned(
                receiver,
                format!(
                    "a `#[{name}]` function cannot take `self`: hooks are free functions; move \
                     it out of the impl block, and reach the value through a static or a \
                     closure hook (`Builder::on_exit(\"name\", move |_ctx| ..)`)"
                ),
            )),
            FnArg::Typed(typed) if index > 0 => errors.push(syn::Error::new_spanned(
                typed,
                format!(
                    "a `#[{name}]` function takes nothing or the hook context \
                     (`ctx: HookContext`); remove this argument"
                ),
            )),
            FnArg::Typed(typed) => match &*typed.ty {
                Type::Reference(reference) => errors.push(syn::Error::new_spanned(
                    reference,
                    format!(
                        "take the hook context by value: `{}: HookContext` (it is cheap to \
                         clone, and a hook cannot borrow from its caller)",
                        typed.pat.to_token_stream()
                    ),
                )),
                Type::ImplTrait(ty) => errors.push(syn::Error::new_spanned(
                    ty,
                    format!(
                        "a `#[{name}]` function takes nothing or the hook context; write \
                         `{}: HookContext`",
                        typed.pat.to_token_stream()
                    ),
                )),
                ty => context = Some(ty.clone()),
            },
        }
    }

    let output_span = match &sig.output {
        ReturnType::Default => sig.ident.span(),
        ReturnType::Type(_, ty) => {
            if let Err(error) = check_return_type(name, ty) {
                errors.push(error);
            }
            ty.span()
        }
    };
    errors.finish()?;
    Ok(Shape {
        is_async: sig.asyncness.is_some(),
        context,
        output_span,
    })
}

/// `()`, or a path ending in `Result` (`Result<(), E>`, `io::Result<()>`, `anyhow::Result<()>`)
/// whose first argument, if written, is `()`. `E: Into<BoxError>` is left to the type checker,
/// which reports it at this type.
fn check_return_type(name: &str, ty: &Type) -> syn::Result<()> {
    let expected = format!(
        "a `#[{name}]` function returns `()` or `Result<(), E>` (with `E` convertible into \
         `BoxError`)"
    );
    match ty {
        Type::Tuple(tuple) if tuple.elems.is_empty() => Ok(()),
        Type::Paren(inner) => check_return_type(name, &inner.elem),
        Type::Path(path) if path.qself.is_none() => {
            let last = path.path.segments.last().expect("a path has a segment");
            if last.ident != "Result" {
                return Err(syn::Error::new_spanned(
                    ty,
                    format!("{expected}, not `{}`", ty.to_token_stream()),
                ));
            }
            if let syn::PathArguments::AngleBracketed(arguments) = &last.arguments {
                if let Some(syn::GenericArgument::Type(ok)) = arguments.args.first() {
                    let is_unit = matches!(ok, Type::Tuple(t) if t.elems.is_empty());
                    if !is_unit {
                        return Err(syn::Error::new_spanned(
                            ok,
                            format!(
                                "a hook's `Result` carries no value: return `Result<(), E>` \
                                 instead of `Result<{}, E>`",
                                ok.to_token_stream()
                            ),
                        ));
                    }
                }
            }
            Ok(())
        }
        Type::ImplTrait(_) => Err(syn::Error::new_spanned(
            ty,
            format!(
                "{expected}; for an asynchronous hook write `async fn` instead of returning \
                 `impl Future`"
            ),
        )),
        _ => Err(syn::Error::new_spanned(
            ty,
            format!("{expected}, not `{}`", ty.to_token_stream()),
        )),
    }
}

/// A hook ordered against itself would be a cycle of one; say so here rather than at `build()`.
fn check_self_reference(function: &ItemFn, args: &Args) -> syn::Result<()> {
    let name = hook_name(function, args);
    let relations = args.after.iter().map(|n| ("after", n));
    for (relation, other) in relations.chain(args.before.iter().map(|n| ("before", n))) {
        if other.value == name {
            return Err(syn::Error::new(
                other.span,
                format!(
                    "hook `{name}` cannot run {relation} itself; name another hook in \
                     `{relation}`"
                ),
            ));
        }
    }
    Ok(())
}

fn hook_name(function: &ItemFn, args: &Args) -> String {
    args.name
        .as_ref()
        .map_or_else(|| function.sig.ident.unraw().to_string(), |lit| lit.value())
}

/// The function, its hook item and its registration.
fn generate(attr: Attr, function: &ItemFn, args: &Args, shape: &Shape) -> TokenStream {
    let krate = args.krate.clone().unwrap_or_else(default_crate);
    let ident = &function.sig.ident;
    let name = hook_name(function, args);
    let ident_str = ident.unraw().to_string();

    let phase = match (attr.builtin_phase(), &args.phase) {
        (Some(builtin), _) => {
            let constant = format_ident!("{}", builtin.to_uppercase());
            quote!(#krate::Phase::#constant)
        }
        (None, Some(phase)) => quote!(#krate::Phase::custom(#phase)),
        (None, None) => unreachable!("`attr::parse` requires `phase` in `#[hook]`"),
    };

    // Locals with `mixed_site` hygiene: a function named `ctx` or `value` cannot clash.
    let ctx = Ident::new("ctx", Span::mixed_site());
    let future = Ident::new("future", Span::mixed_site());
    let value = Ident::new("value", Span::mixed_site());
    // The call passes the context with the span of the argument's type, so a wrong type is
    // reported there.
    let call = match &shape.context {
        Some(ty) => {
            let arg = Ident::new("ctx", Span::mixed_site().located_at(ty.span()));
            quote!(#ident(#arg))
        }
        None => quote!(#ident()),
    };
    let param = match &shape.context {
        Some(_) => ctx,
        None => Ident::new("_ctx", Span::mixed_site()),
    };
    // The conversion is located at the return type: a `Result<(), E>` whose `E` is no error is
    // reported there. (`value_at_output` is `value`, only located elsewhere.)
    let convert = Ident::new(
        "hook_result",
        Span::mixed_site().located_at(shape.output_span),
    );
    let value_at_output = Ident::new("value", Span::mixed_site().located_at(shape.output_span));
    let result = quote! {{
        use #krate::__private::hook_result as #convert;
        #convert(#value_at_output)
    }};
    // The async block carries the function's name, which rustc's note about a future that is
    // not `Send` quotes (the error itself is at the attribute).
    let body = if shape.is_async {
        quote_spanned! {ident.span()=>
            let #future = #call;
            async move {
                let #value = #future.await;
                #result
            }
        }
    } else {
        // A plain function runs when the hook's future is first polled, so a panic is caught
        // and reported like an asynchronous hook's.
        quote_spanned! {ident.span()=>
            async move {
                let #value = #call;
                #result
            }
        }
    };
    let closure = quote! {
        move |#param: #krate::HookContext| {
            #body
        }
    };

    let after = args.after.iter().map(|n| {
        let value = &n.value;
        quote_spanned!(n.span=> .after(#value))
    });
    let before = args.before.iter().map(|n| {
        let value = &n.value;
        quote_spanned!(n.span=> .before(#value))
    });
    let timeout = args.timeout.map(|t| {
        let (secs, nanos) = (t.as_secs(), t.subsec_nanos());
        quote!(.timeout(::core::time::Duration::new(#secs, #nanos)))
    });
    let teardown_of = args.teardown_of.as_ref().map(|n| {
        let value = &n.value;
        quote_spanned!(n.span=> .teardown_of(#value))
    });

    // Through a `macro_rules!` of the core, so the linkme paths are `$crate` paths: a wrong
    // `crate = "..."` is then one error, at the string.
    let registration = args
        .global
        .then(|| quote!(#krate::__private::register!(#ident, #ident_str);));

    let hook_item = hook_item(
        function,
        &krate,
        quote! {
            #krate::HookSpec::new(#phase, #name, #closure)
                .origin(::core::concat!(::core::module_path!(), "::", #ident_str, ":", ::core::line!()))
                #(#after)*
                #(#before)*
                #timeout
                #teardown_of
        },
    );

    quote! {
        #function
        #hook_item
        #registration
    }
}

/// The hidden struct named like the function, and its `MacroHook` impl building `spec`.
fn hook_item(function: &ItemFn, krate: &syn::Path, spec: TokenStream) -> TokenStream {
    let vis = &function.vis;
    let ident = &function.sig.ident;
    quote! {
        #[doc(hidden)]
        #[allow(non_camel_case_types, dead_code)]
        #[derive(Debug)]
        #vis struct #ident {}

        impl #krate::__private::MacroHook for #ident {
            fn spec() -> #krate::HookSpec {
                #spec
            }
        }
    }
}

/// Stands in for the hook item when the attribute has errors, so that only they are reported.
fn stand_in(function: &ItemFn, krate: &syn::Path) -> TokenStream {
    hook_item(
        function,
        krate,
        quote!(::core::unreachable!("this hook did not compile")),
    )
}
