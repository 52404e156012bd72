"""The built-in synthetic fine-grained world and its scripted OpenAI-compatible teacher.

For the demo, the tests and the benchmarks: they run the whole pipeline without a GPU, an
API key or a dataset download, and every number they print can be explained by the flags.
They are no substitute for a real teacher model on real images.

    palette.py    the named part colours and their RGB values
    world.py      attributes, super-categories, class names, `make_world`, `compositional_split`
    draw.py       the canonical bird (polygons) and its rendering with nuisance variation
    read.py       attributes read back from pixels (what the teacher "sees")
    rationale.py  the teacher's four-part rationale, with scripted mistakes
    script.py     the teacher's mind: `Behaviour` flags, perception, scripted answers, counts
    teacher.py    the aiohttp server speaking the Chat Completions API, and `TeacherServer`
    cli.py        `finecot synthetic make | teacher`
"""
