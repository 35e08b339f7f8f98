/** The part of js-yaml's API the tests use: the package ships no types of its own. */
declare module "js-yaml" {
  /** Every document of a YAML stream, as plain values. */
  export function loadAll(text: string): unknown[];
}
