(* Facts about lists, on top of the installed MathComp. *)
From mathcomp Require Import all_ssreflect.
From mclib Require Import natfacts.

Set Implicit Arguments.
Unset Strict Implicit.
Unset Printing Implicit Defensive.

Section Seqs.
Variable T : eqType.

Lemma size_cat3 (s1 s2 s3 : seq T) : size (s1 ++ s2 ++ s3) = size s1 + size s2 + size s3.
Proof.
rewrite !size_cat.
by rewrite addnA.
Qed.

Lemma rev_cat3 (s1 s2 : seq T) : rev (s1 ++ s2) = rev s2 ++ rev s1.
Proof.
rewrite rev_cat.
done.
Qed.

Lemma mem_cat_or (x : T) s1 s2 : (x \in s1 ++ s2) = (x \in s1) || (x \in s2).
Proof.
rewrite mem_cat.
done.
Qed.

Lemma count_cat_add (p : pred T) s1 s2 : count p (s1 ++ s2) = count p s1 + count p s2.
Proof.
rewrite count_cat.
done.
Qed.

Lemma size_rev_rev (s : seq T) : size (rev (rev s)) = size s.
Proof. have e : rev (rev s) = s by rewrite revK. by rewrite e. Qed.

Lemma in_cons_head (x : T) s : x \in x :: s.
Proof.
rewrite in_cons.
by rewrite eqxx.
Qed.

Lemma uniq_rev_iff (s : seq T) : uniq (rev s) = uniq s.
Proof.
rewrite rev_uniq.
done.
Qed.

Lemma size_map_id (f : T -> T) s : size (map f s) = size s.
Proof.
rewrite size_map.
done.
Qed.

Lemma twice_size (s : seq T) : twice (size s) = size (s ++ s).
Proof.
rewrite size_cat.
done.
Qed.

Lemma nth_cat_left x0 (s1 s2 : seq T) i : i < size s1 -> nth x0 (s1 ++ s2) i = nth x0 s1 i.
Proof.
move=> lt_i.
by rewrite nth_cat lt_i.
Qed.

End Seqs.

Lemma tuple_size_eq n (T : Type) (t : n.-tuple T) : size (tval t) = n.
Proof.
rewrite size_tuple.
done.
Qed.

Lemma sum_iota_le n : \sum_(i < n) i <= \sum_(i < n) n.
Proof.
have h : forall i : 'I_n, (i : nat) <= n by move=> i; exact: ltnW.
by apply: leq_sum => i _; exact: h.
Qed.
