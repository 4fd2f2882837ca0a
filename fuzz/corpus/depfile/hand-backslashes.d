foo\\ bar: baz\\\ qux
