/**
 * Splits a command line the way a POSIX shell would for the subset the banner may use: words,
 * '...' and "..." quoting and backslash escapes. Anything that needs a real shell (pipes,
 * redirections, variables, command substitution) is rejected, since the banner's commands must
 * run as printed.
 */
export function shellSplit(line: string): string[] {
  const words: string[] = [];
  let word = "";
  let inWord = false;
  for (let i = 0; i < line.length; i++) {
    const c = line[i] as string;
    if (c === "'") {
      const end = line.indexOf("'", i + 1);
      if (end < 0) throw new Error(`unterminated ' in: ${line}`);
      word += line.slice(i + 1, end);
      inWord = true;
      i = end;
    } else if (c === '"') {
      inWord = true;
      for (i++; i < line.length && line[i] !== '"'; i++) {
        const d = line[i] as string;
        if (d === "$" || d === "`") throw new Error(`needs a shell (${d}): ${line}`);
        if (d === "\\" && i + 1 < line.length && '"\\$`'.includes(line[i + 1] as string)) i++;
        word += line[i];
      }
      if (i >= line.length) throw new Error(`unterminated " in: ${line}`);
    } else if (c === "\\") {
      if (i + 1 >= line.length) throw new Error(`trailing backslash in: ${line}`);
      word += line[++i];
      inWord = true;
    } else if (/\s/.test(c)) {
      if (inWord) words.push(word);
      word = "";
      inWord = false;
    } else if ("|&;<>()$`*?[".includes(c) || (!inWord && "#~".includes(c))) {
      throw new Error(`needs a shell (${c}): ${line}`);
    } else {
      word += c;
      inWord = true;
    }
  }
  if (inWord) words.push(word);
  return words;
}
