a: b
b: c
