"""Plain formulations of the library's maths, written the way the original research code is organised (one tensor
operation per equation, Python loops over steps and environments). ``plasticnet bench`` times the library against
them in the same run, and the tests check that they compute the same things. Nothing in the library imports them."""
