/**
 * Tokens a list never issued, made from one it did: a character changed in its IV (the start), its
 * sealed text (the middle) and its tag (the end; not the last character, whose low bits base64url
 * ignores), the token cut short, and the token with a stray character.
 */
export function tamperedTokens(token: string): string[] {
  const changedAt = (i: number) =>
    token.slice(0, i) + (token[i] === "A" ? "B" : "A") + token.slice(i + 1);
  return [
    changedAt(0),
    changedAt(Math.floor(token.length / 2)),
    changedAt(token.length - 2),
    token.slice(0, -2),
    `${token}.`,
  ];
}
