"""coqidetop's output made light to parse: each printed document (a goal's hypothesis or
conclusion, a message) becomes one element of plain text before the XML parser sees it."""

from __future__ import annotations

import re

_DOCUMENT = re.compile(rb"<richpp>|<ppdoc\b")
_PPDOC_TAG = re.compile(rb"<ppdoc\b[^>]*?(/?)>|</ppdoc>")
_MARKUP = re.compile(rb"<[^>]*>")
_PP_TEXT = re.compile(
    rb'<ppdoc val="string"><string>([^<]*)</string>'
    rb'|<ppdoc val="break"><pair><int>(\d+)</int>'
    rb'|<ppdoc val="(?:force_)?newline"/>'
)


class PlainDocuments:
    """coqidetop's output, chunk by chunk, with each printed document (a goal's hypothesis or
    conclusion, a message) made one element of plain text.

    A large goal is printed as millions of boxes and tags; parsed as XML elements one by one,
    they cost this process many times what Rocq spends printing them. Their text is all the
    decoders keep: `<richpp>` (Rocq's layout: its tags dropped, its text as is) and `<ppdoc>`
    (`app.rocq.protocol.FLAT_PRINTING`: its strings in order, each break as its spaces and
    each newline as one, made `<pptext>`), read here with regular expressions over the bytes
    instead. A document (or a tag) not whole yet is held until the chunk that completes it."""

    def __init__(self) -> None:
        self._held = bytearray()
        self._in_document = False
        """Whether `_held` starts with a document not whole yet."""
        self._scanned = 0
        """How far into `_held` that document was read already."""
        self._depth = 0
        """`<ppdoc>` elements open at `_scanned`."""

    def feed(self, data: bytes) -> bytes:
        """The output that `data` completes, documents made plain."""
        held, out, done = self._held, [], 0
        held += data
        while True:
            if not self._in_document:
                found = _DOCUMENT.search(held, done)
                if found is None:
                    cut_tag = held.rfind(b"<", done)
                    whole = cut_tag if cut_tag > held.rfind(b">", done) else len(held)
                    out.append(held[done:whole])
                    done = whole
                    break
                out.append(held[done : found.start()])
                done, self._in_document, self._scanned, self._depth = found.start(), True, 0, 0
            end = self._document_end(held, done)
            if end is None:
                break
            out.append(_plain(bytes(held[done:end])))
            done, self._in_document = end, False
        del held[:done]
        self._scanned = max(0, self._scanned - done)
        return b"".join(out)

    def _document_end(self, held: bytearray, start: int) -> int | None:
        """Where the document at `start` ends, if `held` has all of it (else what was read of
        it is remembered, so that each byte is read once)."""
        scan = max(start, self._scanned)
        if held.startswith(b"<richpp>", start):
            end = held.find(b"</richpp>", scan)
            if end >= 0:
                return end + len(b"</richpp>")
            self._scanned = max(start, len(held) - len(b"</richpp>"))
            return None
        for tag in _PPDOC_TAG.finditer(held, scan):
            if tag.group(0).startswith(b"</"):
                self._depth -= 1
            elif not tag.group(1):  # an opening tag (`<ppdoc …/>` is whole already)
                self._depth += 1
            self._scanned = tag.end()
            if self._depth == 0:
                return tag.end()
        return None


def _plain(document: bytes) -> bytes:
    """A whole document as one element of its text."""
    if document.startswith(b"<richpp>"):
        return b"<richpp>" + _MARKUP.sub(b"", document) + b"</richpp>"
    pieces = []
    for token in _PP_TEXT.finditer(document):
        text, spaces = token.group(1), token.group(2)
        if text is not None:
            pieces.append(text)
        else:  # a break's spaces, or one for a newline
            pieces.append(b" " * (int(spaces) if spaces is not None else 1))
    return b"<pptext>" + b"".join(pieces) + b"</pptext>"
