"""A minimal stand-in for the ``gradio`` 3.41 API the extension's script uses (A1111 v1.10.1 pins 3.41.2).

Components keep their constructor kwargs and ``value``; layout blocks are
context managers that collect the components created inside them; event
methods (``click``, ``change``, ...) record their handlers in ``.events`` so a
test can call them. Nothing renders.
"""

from __future__ import annotations

from typing import Any

_context: list["BlockContext"] = []


class Block:
    def __init__(self, *, elem_id: str | None = None, elem_classes: Any = None, visible: bool = True, **kwargs: Any) -> None:
        self.elem_id = elem_id
        self.elem_classes = elem_classes
        self.visible = visible
        self.kwargs = kwargs
        self.parent = _context[-1] if _context else None
        if self.parent is not None:
            self.parent.children.append(self)


class BlockContext(Block):
    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.children: list[Block] = []

    def __enter__(self) -> "BlockContext":
        _context.append(self)
        return self

    def __exit__(self, *exc: Any) -> None:
        _context.pop()


class Blocks(BlockContext):
    pass


class Row(BlockContext):
    pass


class Column(BlockContext):
    pass


class Group(BlockContext):
    pass


class Accordion(BlockContext):
    def __init__(self, label: str | None = None, open: bool = True, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.label = label
        self.open = open


class Tab(BlockContext):
    pass


class Component(Block):
    def __init__(self, value: Any = None, *, label: str | None = None, interactive: bool | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.value = value
        self.label = label
        self.interactive = interactive
        self.events: list[tuple[str, dict]] = []

    def _listener(self, event: str, fn: Any = None, inputs: Any = None, outputs: Any = None, **kwargs: Any) -> dict:
        record = {"fn": fn, "inputs": inputs, "outputs": outputs, **kwargs}
        self.events.append((event, record))
        return record

    def click(self, fn: Any = None, inputs: Any = None, outputs: Any = None, **kwargs: Any) -> dict:
        return self._listener("click", fn, inputs, outputs, **kwargs)

    def change(self, fn: Any = None, inputs: Any = None, outputs: Any = None, **kwargs: Any) -> dict:
        return self._listener("change", fn, inputs, outputs, **kwargs)

    def upload(self, fn: Any = None, inputs: Any = None, outputs: Any = None, **kwargs: Any) -> dict:
        return self._listener("upload", fn, inputs, outputs, **kwargs)

    def release(self, fn: Any = None, inputs: Any = None, outputs: Any = None, **kwargs: Any) -> dict:
        return self._listener("release", fn, inputs, outputs, **kwargs)


class Checkbox(Component):
    def __init__(self, value: bool = False, **kwargs: Any) -> None:
        super().__init__(value, **kwargs)


class Slider(Component):
    def __init__(self, minimum: float = 0, maximum: float = 100, value: Any = None, step: float | None = None, **kwargs: Any) -> None:
        super().__init__(minimum if value is None else value, **kwargs)
        self.minimum, self.maximum, self.step = minimum, maximum, step


class Radio(Component):
    def __init__(self, choices: Any = None, value: Any = None, **kwargs: Any) -> None:
        super().__init__(value, **kwargs)
        self.choices = list(choices or [])


class Dropdown(Radio):
    pass


class Image(Component):
    def __init__(self, value: Any = None, *, type: str = "numpy", image_mode: str = "RGB", source: str = "upload", tool: Any = None, **kwargs: Any) -> None:
        super().__init__(value, **kwargs)
        self.type, self.image_mode, self.source, self.tool = type, image_mode, source, tool


class Button(Component):
    def __init__(self, value: str = "Run", **kwargs: Any) -> None:
        super().__init__(value, **kwargs)


class HTML(Component):
    def __init__(self, value: str = "", **kwargs: Any) -> None:
        super().__init__(value, **kwargs)


class Markdown(Component):
    def __init__(self, value: str = "", **kwargs: Any) -> None:
        super().__init__(value, **kwargs)


class Textbox(Component):
    def __init__(self, value: str = "", **kwargs: Any) -> None:
        super().__init__(value, **kwargs)


class Number(Component):
    pass


def update(**kwargs: Any) -> dict:
    return {"__type__": "update", **kwargs}


class blocks:  # noqa: N801 - the real gradio.blocks module's one name the host's scripts.py uses
    Block = Block
