"""Checks shared by the presets: the kind of student a method trains."""

from keras_okd.distiller.peers import is_multi_branch


def branch_student(student, method, num_branches=None, per_branch_inputs=None):
    """Refuse anything but one multi-branch student (with the expected branch count and inputs)."""
    if not is_multi_branch(student):
        raise ValueError(
            f"{method} trains the branches of ONE multi-branch student; build it with "
            f"keras_okd.models.multi_branch(name, num_branches=3, ...) instead of passing independent students."
        )
    found = len(student.output["logits"])
    if num_branches is not None and found != int(num_branches):
        raise ValueError(f"{method}: num_branches={num_branches} but the student has {found} branches.")
    if per_branch_inputs and len(student.inputs) != found:
        raise ValueError(
            f"{method} feeds each branch its own augmented view: build the student with "
            "keras_okd.models.multi_branch(..., per_branch_inputs=True)."
        )
    return student


def independent_students(students, method):
    """Refuse a multi-branch student where a method trains independent networks."""
    if is_multi_branch(students):
        raise ValueError(
            f"{method} trains independent students (a list of keras.Model); got one multi-branch model. Use "
            "pcl, dkel or one for branches."
        )
    return students
