//! Compile-fail cases (one misuse per file, with the expected message in its `.stderr`) and
//! compile-pass cases for the hook attributes, run by trybuild.

#[test]
fn ui() {
    let cases = trybuild::TestCases::new();
    cases.compile_fail("tests/ui/fail/*.rs");
    cases.pass("tests/ui/pass/*.rs");
}
